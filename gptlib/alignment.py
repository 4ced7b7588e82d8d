"""Learning from demonstrations and preferences: response log-probabilities, SFT batches and a
reward model trained on rankings.

Taught in notebooks/12_instructgpt.ipynb.

InstructGPT (Ouyang et al. 2022, §3.5) has three stages: supervised fine-tuning (SFT) on
demonstrations, a reward model (RM) trained on rankings of several responses to one prompt, and
reinforcement learning against the RM with a KL penalty (PPO, in `gptlib.ppo`). DPO
(Rafailov et al. 2023, in `gptlib.dpo`) skips the reward model and the RL: it fits the policy
to the same preference pairs directly. Every sequence here is a prompt followed by a response, stored as
one row of token ids (B, T), right-padded, with a boolean `response_mask` (B, T) that is True
at the response's tokens (its end-of-text token included).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .finetune import ClassifierBatch, SequenceClassifier
from .model import GPT

__all__ = [
    "Comparisons",
    "Rollout",
    "SFTData",
    "generate_responses",
    "main",
    "normalise_scores",
    "optimizer_step",
    "pairwise_accuracy",
    "pairwise_loss",
    "reward_model",
    "sampled_kl",
    "sequence_logprobs",
    "sequence_scores",
    "token_logprobs",
    "train_reward_model",
]


def _last_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last True entry of a (B, T) mask."""
    positions = torch.arange(response_mask.size(1), device=response_mask.device)
    return (positions * response_mask).amax(dim=1)


def _check_rows(idx: torch.Tensor, response_mask: torch.Tensor) -> None:
    if idx.dim() != 2 or response_mask.shape != idx.shape or response_mask.dtype != torch.bool:
        raise ValueError(
            f"idx must be (B, T) token ids and response_mask a bool tensor of the same shape; "
            f"got {tuple(idx.shape)} and {tuple(response_mask.shape)} {response_mask.dtype}"
        )
    if idx.size(1) < 2 or bool(response_mask[:, 0].any()):
        raise ValueError(
            "the first token of a row cannot be part of the response: a response follows a "
            "prompt of at least one token, whose last token predicts the response's first"
        )


def token_logprobs(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token given the tokens before it: (B, T) ids -> (B, T - 1) nats.

    Taught in notebooks/12_instructgpt.ipynb.
    Entry [b, t] is log π(idx[b, t + 1] | idx[b, : t + 1]),
    from one forward pass; gradients flow to the model.
    """
    if idx.dim() != 2 or idx.size(1) < 2:
        raise ValueError(f"idx must be (B, T) token ids with T >= 2, got {tuple(idx.shape)}")
    logits = model(idx[:, :-1]).logits.float()
    return -F.cross_entropy(logits.transpose(1, 2), idx[:, 1:], reduction="none")


def sequence_logprobs(model: GPT, idx: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of each row's response tokens: log π(y | x), shape (B,), nats.

    Taught in notebooks/12_instructgpt.ipynb.
    The prompt and the padding do not count; gradients flow
    to the model, so DPO can train through it (Rafailov et al. 2023, Eq. 7).
    """
    _check_rows(idx, response_mask)
    width = int(response_mask.any(dim=0).nonzero().max()) + 1 if response_mask.any() else 2
    idx, response_mask = idx[:, :width], response_mask[:, :width]  # drop the padding columns
    return (token_logprobs(model, idx) * response_mask[:, 1:]).sum(dim=1)


@torch.no_grad()
def sampled_kl(policy: GPT, reference: GPT, rollout: Rollout) -> torch.Tensor:
    """log π(y|x) - log π_ref(y|x) of each sampled response (B,), in nats.

    Taught in notebooks/12_instructgpt.ipynb.
    For responses sampled from `policy`, the mean of this is
    an unbiased estimate of KL(π || π_ref), the distance the KL penalty holds down.
    """
    return sequence_logprobs(policy, rollout.idx, rollout.response_mask) - sequence_logprobs(
        reference, rollout.idx, rollout.response_mask
    )


@dataclass
class Rollout:
    """Prompts with sampled responses, right-padded into one batch (`generate_responses`).

    Taught in notebooks/12_instructgpt.ipynb.
    """

    idx: torch.Tensor  # (B, T) prompt, response, then padding
    response_mask: torch.Tensor  # (B, T) True at response tokens, the end-of-text included
    prompt_lengths: torch.Tensor  # (B,)

    @property
    def last(self) -> torch.Tensor:
        """(B,) position of each row's last response token, where the reward model reads."""
        return _last_positions(self.response_mask)

    def responses(self, eos_id: int | None = None) -> list[list[int]]:
        """Each row's response ids, without the end-of-text token `eos_id`."""
        rows = [row[mask].tolist() for row, mask in zip(self.idx, self.response_mask, strict=True)]
        return [r[:-1] if r and eos_id is not None and r[-1] == eos_id else r for r in rows]


@torch.no_grad()
def generate_responses(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample one response per prompt with `model.generate`, ending at `eos_id` or the limit.

    Taught in notebooks/12_instructgpt.ipynb. `GPT` has no padding mask, so prompts of equal length
    are generated together and the groups are joined afterwards, right-padded with `eos_id`
    (padding sits after each response, where causal attention cannot see it).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token-id lists")
    device = next(model.parameters()).device
    rows: list[torch.Tensor | None] = [None] * len(prompts)
    for length in sorted({len(p) for p in prompts}):
        members = [i for i, p in enumerate(prompts) if len(p) == length]
        idx = torch.tensor([list(prompts[i]) for i in members], device=device)
        out = model.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            eos_token_id=eos_id,
        )
        for i, row in zip(members, out, strict=True):
            response = row[length:]
            ends = (response == eos_id).nonzero()
            rows[i] = row[: length + (int(ends[0]) + 1 if len(ends) else len(response))]
    width = max(len(r) for r in rows)
    idx = torch.full((len(rows), width), eos_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(idx, dtype=torch.bool)
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    for i, row in enumerate(rows):
        idx[i, : len(row)] = row
        mask[i, int(lengths[i]) : len(row)] = True
    return Rollout(idx, mask, lengths)


class SFTData:
    """Prompt-response pairs served as training batches whose loss ignores the prompt tokens.

    Taught in notebooks/12_instructgpt.ipynb. InstructGPT's SFT is next-token prediction on labeler
    demonstrations (Ouyang et al. 2022, §3.5); only the response is learned, so targets at
    prompt positions (and padding) are -1, which the model's loss ignores.
    """

    def __init__(
        self, examples: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
    ) -> None:
        if not examples or any(not p or not r for p, r in examples):
            raise ValueError("examples must be a non-empty list of (prompt ids, response ids)")
        self.examples = [(list(p), list(r)) for p, r in examples]
        self.pad_id = pad_id
        self.longest = max(len(p) + len(r) for p, r in self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def get_batch(
        self,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random examples as (x, y), each (batch_size, L) with L the longest x in the batch.

        y[b, t] is the token after x[b, t] where that token belongs to the response, else -1.
        """
        if self.longest - 1 > block_size:
            raise ValueError(
                f"an example is {self.longest} tokens long, which needs block_size >= "
                f"{self.longest - 1}; got {block_size}. Shorten the examples or enlarge the model"
            )
        chosen = torch.randint(len(self.examples), (batch_size,), generator=generator).tolist()
        width = max(len(self.examples[i][0]) + len(self.examples[i][1]) for i in chosen) - 1
        x = torch.full((batch_size, width), self.pad_id, dtype=torch.long)
        y = torch.full((batch_size, width), -1, dtype=torch.long)
        for row, i in enumerate(chosen):
            prompt, response = self.examples[i]
            ids = torch.tensor(prompt + response)
            x[row, : len(ids) - 1] = ids[:-1]
            y[row, len(prompt) - 1 : len(ids) - 1] = ids[len(prompt) :]
        return x.to(device), y.to(device)


def reward_model(gpt: GPT) -> SequenceClassifier:
    """A copy of `gpt` with a scalar head on the last token: the reward model r(x, y).

    Taught in notebooks/12_instructgpt.ipynb. InstructGPT starts its RM from a fine-tuned GPT-3 with
    the unembedding layer replaced by a projection to one number (Ouyang et al. 2022, §3.5);
    this reuses GPT-1's classifier head (`gptlib.finetune.SequenceClassifier`, n_classes=1)
    with no dropout and no auxiliary LM loss. The given model is not changed.
    """
    return SequenceClassifier(copy.deepcopy(gpt), n_classes=1, lm_weight=0.0, dropout=0.0)


def sequence_scores(
    model: SequenceClassifier, idx: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    """The scalar head's score of each row, read at position `last` (B,): shape (B,).

    Taught in notebooks/12_instructgpt.ipynb. For a reward model, `last` is each row's last response
    token (`Rollout.last`), where the whole prompt and response are in view. Raises ValueError
    for a head with more than one output.
    """
    if model.head.out_features != 1:
        raise ValueError(f"need a scalar head (n_classes=1), got {model.head.out_features}")
    return model(ClassifierBatch(idx, last, torch.full_like(idx, -1))).logits.squeeze(-1)


@torch.no_grad()
def normalise_scores(model: SequenceClassifier, idx: torch.Tensor, last: torch.Tensor) -> None:
    """Shift and scale the scalar head so that these rows score mean 0 and standard deviation 1.

    Taught in notebooks/12_instructgpt.ipynb. The pairwise loss leaves a reward model's offset and
    scale free; InstructGPT shifts its RM so that the demonstrations score 0 on average before
    RL (Ouyang et al. 2022, §3.5). Here the SFT model's samples are the reference, and the
    unit scale makes one KL coefficient β mean the same for every seed.
    """
    scores = sequence_scores(model.eval(), idx, last)
    mean, std = scores.mean(), scores.std()
    model.head.weight /= std
    model.head.bias.sub_(mean).div_(std)


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log σ(r_chosen - r_rejected) over the pairs: the reward model's loss, in nats.

    Taught in notebooks/12_instructgpt.ipynb. Ouyang et al. 2022, §3.5, Eq. 1: with all C(K, 2)
    pairs of a ranking of K responses, the loss is -1/C(K,2) E[log σ(r(x, y_w) - r(x, y_l))].
    It only depends on differences of rewards, so it leaves the RM's offset free. Shapes (P,).
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"shapes differ: {tuple(r_chosen.shape)} vs {tuple(r_rejected.shape)}")
    return F.softplus(r_rejected - r_chosen).mean()  # softplus(-z) = -log σ(z), stable


@dataclass
class Comparisons:
    """Ranked responses: sequences grouped by prompt, and (chosen, rejected) pairs of them.

    Taught in notebooks/12_instructgpt.ipynb;
    `gptlib.instructions.label_comparisons` makes them from
    a labeler's rankings. The reward model and DPO learn from the same object.
    """

    idx: torch.Tensor  # (N, T) prompt + response rows, right-padded
    response_mask: torch.Tensor  # (N, T)
    group: torch.Tensor  # (N,) which prompt each row answers
    pairs: torch.Tensor  # (P, 2) row indices (chosen, rejected)

    @property
    def last(self) -> torch.Tensor:
        """(N,) position of each row's last response token."""
        return _last_positions(self.response_mask)

    def subset(self, groups: torch.Tensor) -> Comparisons:
        """The rows and pairs of the given prompts only (e.g. a train/test split by prompt)."""
        keep = torch.isin(self.group, groups)
        new_index = torch.cumsum(keep, 0) - 1
        pairs = self.pairs[keep[self.pairs].all(dim=1)]
        return Comparisons(
            self.idx[keep], self.response_mask[keep], self.group[keep], new_index[pairs]
        )


def _scores_of_rows(
    model: SequenceClassifier, data: Comparisons, rows: torch.Tensor
) -> torch.Tensor:
    """Scores (N,) with only `rows` computed (the rest zero), so one forward serves all pairs."""
    scores = sequence_scores(model, data.idx[rows], data.last[rows])
    return torch.zeros(len(data.idx), device=scores.device).index_put((rows,), scores)


def pairwise_accuracy(model: SequenceClassifier, data: Comparisons) -> float:
    """Share of pairs whose chosen response the reward model scores higher (0.5 = chance).

    Taught in notebooks/12_instructgpt.ipynb, on comparisons the reward model was not trained on.
    Raises ValueError when `data` holds no pairs.
    """
    if len(data.pairs) == 0:
        raise ValueError("these comparisons hold no pairs to score; rank more responses")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        scores = _scores_of_rows(model, data, torch.arange(len(data.idx)))
    model.train(was_training)
    return float((scores[data.pairs[:, 0]] > scores[data.pairs[:, 1]]).float().mean())


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    model: torch.nn.Module,
    max_norm: float = 1.0,
) -> None:
    """One update: gradients of `loss`, clipped to global norm `max_norm`, then `optimizer.step()`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()


def train_reward_model(
    model: SequenceClassifier,
    data: Comparisons,
    steps: int,
    prompts_per_batch: int = 16,
    lr: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Fit the reward model to the pairs with `pairwise_loss`; return the loss of each step.

    Taught in notebooks/12_instructgpt.ipynb. Each step takes `prompts_per_batch` prompts and every
    pair of their rankings, scoring each response once: InstructGPT puts all C(K, 2) pairs of a
    prompt in one batch element, which needs one forward pass per response instead of one per
    pair, and stops the overfitting it saw when the pairs of a prompt were shuffled apart
    (Ouyang et al. 2022, §3.5).
    """
    generator = torch.Generator().manual_seed(seed)
    groups = data.group[data.pairs[:, 0]].unique()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for _ in range(steps):
        chosen = groups[torch.randperm(len(groups), generator=generator)[:prompts_per_batch]]
        pairs = data.pairs[torch.isin(data.group[data.pairs[:, 0]], chosen)]
        scores = _scores_of_rows(model, data, pairs.flatten().unique())
        loss = pairwise_loss(scores[pairs[:, 0]], scores[pairs[:, 1]])
        optimizer_step(optimizer, loss, model)
        losses.append(loss.item())
    return losses


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the command line `python -m gptlib.alignment` (options: `--help`; see alignment_cli).

    Taught in notebooks/12_instructgpt.ipynb.
    """
    from .alignment_cli import run

    return run(argv)


if __name__ == "__main__":
    main()
