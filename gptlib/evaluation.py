"""Scoring text with a language model: the log-probability of each token given its prefix, of a
continuation given a context, the perplexity of a text, zero-shot classification and GPT-3's
multiple-choice scoring.

Taught in notebooks/08_gpt2.ipynb (perplexity; zero-shot classification by scoring label words,
as GPT-2 was evaluated, Radford et al. 2019, §3) and notebooks/09_gpt3.ipynb (multiple choice:
plain likelihood, normalised by length, or by the answer's unconditional probability, Brown et
al. 2020, §2.4). Everything here reads the model's next-token distribution; nothing samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from .generation import INTEGER_IDS
from .sampling import check_integer

if TYPE_CHECKING:
    from .model import GPT

__all__ = [
    "METHODS",
    "ChoiceScores",
    "ContinuationLogprobs",
    "continuation_logprobs",
    "perplexity",
    "score_choices",
    "token_logprobs",
    "zero_shot_classify",
]

# How score_choices ranks the choices of a question (see ChoiceScores.scores).
METHODS = ("sum", "per_token", "per_char", "unconditional")


def token_logprobs(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """log p(idx[:, t + 1] | idx[:, : t + 1]) for every position: (B, T - 1) float32.

    Taught in notebooks/08_gpt2.ipynb. idx is a (B, T) tensor of token ids, T >= 2 (the first
    token has no prefix, so it gets no log-probability). The sum of a row is the log-probability
    of the whole row given its first token, and minus the mean is the cross-entropy loss that
    `GPT.forward` returns for targets idx[:, 1:]. The model runs in whatever mode it is in and
    the autograd graph is kept, so a training objective (a sequence's log-probability under a
    policy) can be built on it; wrap the call in torch.no_grad() to only score. Raises
    ValueError for a shorter or malformed idx (and as `GPT.forward` does for ids outside the
    vocabulary).
    """
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in INTEGER_IDS:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be an integer tensor of shape (batch, time), got {shape}")
    B, T = idx.shape
    if T < 2:
        raise ValueError(
            f"idx has {T} token(s) per row; scoring needs at least 2 (a token and a prefix)"
        )
    logits = model(idx[:, :-1]).logits.float()  # the last token predicts nothing we score
    targets = idx[:, 1:]
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    )
    return -nll.view(B, T - 1)


class ContinuationLogprobs(NamedTuple):
    """What `continuation_logprobs` returns."""

    logprobs: torch.Tensor  # (N, L) float32: log p of each continuation token; 0 past the end
    lengths: torch.Tensor  # (N,) int64: tokens in each continuation


def _token_ids(name: str, ids: object) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    return [check_integer(f"{name} token", t, 0, "a token id >= 0") for t in ids]


def continuation_logprobs(
    model: GPT,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> ContinuationLogprobs:
    """Per-token log-probabilities of each continuation given its context, in padded batches.

    Taught in notebooks/08_gpt2.ipynb. contexts[i] and continuations[i] are lists of token ids;
    row i of the result holds log p(c_j | context, c_1 .. c_{j-1}) for the tokens c_j of
    continuation i, followed by zeros, so `.logprobs.sum(1)` is each continuation's
    log-probability. Pairs are joined, right-padded (causal attention keeps the padding from
    changing any scored position) and scored batch_size at a time, in eval mode and without
    gradients. With learned positions a pair longer than block_size keeps the last block_size
    tokens: the context is cut from the left, as generation does. Raises ValueError for lists
    of different lengths, an empty context or continuation, or a continuation that does not fit
    the model's block_size with one token of context; TypeError for something that is not a
    list of token ids.
    """
    if len(contexts) != len(continuations):
        raise ValueError(
            f"got {len(contexts)} contexts and {len(continuations)} continuations; give one "
            "context per continuation"
        )
    if len(contexts) == 0:
        raise ValueError("no continuations to score; give at least one (context, continuation)")
    batch_size = check_integer("batch_size", batch_size, 1, "a positive integer")
    config = model.config
    limit = config.block_size if config.position == "learned" else None
    pairs = []
    for i, (context, continuation) in enumerate(zip(contexts, continuations, strict=True)):
        context = _token_ids("context", context)
        continuation = _token_ids("continuation", continuation)
        if not context or not continuation:
            empty = "context" if not context else "continuation"
            raise ValueError(
                f"the {empty} of pair {i} is empty; a continuation of at least one token is "
                "scored after a context of at least one token"
            )
        if limit is not None and len(continuation) + 1 > limit:
            raise ValueError(
                f"continuation {i} has {len(continuation)} tokens; with block_size={limit} at most "
                f"{limit - 1} fit after one token of context"
            )
        ids = context + continuation
        if limit is not None:
            ids = ids[-limit:]
        pairs.append((ids, len(continuation)))
    lengths = torch.tensor([n for _, n in pairs])
    out = torch.zeros(len(pairs), int(lengths.max()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                longest = max(len(ids) for ids, _ in chunk)
                idx = torch.zeros(len(chunk), longest, dtype=torch.long)
                for row, (ids, _) in enumerate(chunk):
                    idx[row, : len(ids)] = torch.tensor(ids)
                scored = token_logprobs(model, idx.to(device)).cpu()  # (b, longest - 1)
                for row, (ids, n) in enumerate(chunk):
                    # token j of the row is predicted at column j - 1
                    out[start + row, :n] = scored[row, len(ids) - 1 - n : len(ids) - 1]
    finally:
        model.train(was_training)
    return ContinuationLogprobs(out, lengths)


def perplexity(
    model: GPT,
    ids: Sequence[int] | torch.Tensor,
    stride: int | None = None,
    batch_size: int = 8,
) -> float:
    """exp of the mean negative log-probability per token of a text: its perplexity.

    Taught in notebooks/08_gpt2.ipynb. ids is the text's token ids (a list or a 1-D tensor,
    at least 2 tokens); every token after the first is scored once. A text longer than the
    model's block_size is read in windows of at most block_size tokens: each window scores the
    next `stride` tokens and gives them the block_size - stride tokens before as context
    (stride defaults to block_size - 1: windows side by side, sharing one token, the cheapest
    and the least context; a smaller stride costs more windows and gives every token at least
    block_size - stride tokens of context). ln(perplexity) is the mean cross-entropy in nats
    per token, the training loss's unit: a perplexity P means the model is on average as
    uncertain as a uniform choice among P tokens. Raises ValueError for fewer than 2 tokens or
    a stride outside [1, block_size - 1].
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(
                f"ids must be one text's token ids (1-D), got shape {tuple(ids.shape)}"
            )
        ids = ids.tolist()
    ids = _token_ids("ids", ids)
    if len(ids) < 2:
        raise ValueError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    window = model.config.block_size
    if window < 2:
        raise ValueError(f"block_size={window}: a window needs a token of context and one to score")
    if stride is None:
        stride = window - 1
    stride = check_integer("stride", stride, 1, f"an integer in [1, {window - 1}]")
    if stride > window - 1:
        raise ValueError(
            f"stride={stride} is too large for block_size={window}: a window scores at most "
            f"{window - 1} tokens after one token of context; use a stride in [1, {window - 1}]"
        )
    # Each window is a (context, continuation) pair: the tokens it scores come last.
    contexts, continuations, scored_until = [], [], 1  # token 0 has no prefix
    while scored_until < len(ids):
        end = min(scored_until + stride, len(ids))
        contexts.append(ids[max(0, end - window) : scored_until])
        continuations.append(ids[scored_until:end])
        scored_until = end
    scored = continuation_logprobs(model, contexts, continuations, batch_size)
    return math.exp(-float(scored.logprobs.sum()) / float(scored.lengths.sum()))


@dataclass
class ChoiceScores:
    """Log-probabilities of the choices of Q questions with C choices each, from `score_choices`.

    logprob (Q, C): log P(choice | context), summed over the choice's tokens. n_tokens and
    n_chars (Q, C): the choice's length in tokens and in characters. unconditional (Q, C) or
    None: log P(choice | answer_context), the choice's probability without the question.
    """

    logprob: torch.Tensor
    n_tokens: torch.Tensor
    n_chars: torch.Tensor
    unconditional: torch.Tensor | None = None

    def scores(self, method: str = "per_token") -> torch.Tensor:
        """(Q, C) scores of one method of `METHODS`; the highest score is the model's answer.

        Taught in notebooks/09_gpt3.ipynb. "sum": log P(choice | context), plain likelihood,
        which favours short choices (every token costs probability). "per_token": divided by the
        number of tokens, what GPT-3 used on most tasks (Brown et al. 2020, §2.4). "per_char":
        divided by the number of characters, which does not depend on the tokenizer (EleutherAI's
        evaluation harness reports it as acc_norm, Gao et al. 2021). "unconditional":
        log P(choice | context) - log P(choice | answer_context), GPT-3's normalisation for ARC,
        OpenBookQA and RACE, which discounts choices that are likely whatever the question.
        Raises ValueError for another method, or for "unconditional" when score_choices had no
        answer_context.
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r} is unknown; choose one of {METHODS}")
        if method == "sum":
            return self.logprob
        if method == "per_token":
            return self.logprob / self.n_tokens
        if method == "per_char":
            return self.logprob / self.n_chars
        if self.unconditional is None:
            raise ValueError(
                "method='unconditional' needs the choices' unconditional log-probabilities; "
                "call score_choices with answer_context (GPT-3 used 'Answer: ' or 'A: ')"
            )
        return self.logprob - self.unconditional

    def predict(self, method: str = "per_token") -> torch.Tensor:
        """(Q,) index of the best-scoring choice of each question under `method`."""
        return self.scores(method).argmax(dim=1)


def score_choices(
    model: GPT,
    encode: Callable[[str], Sequence[int]],
    contexts: Sequence[str],
    choices: Sequence[Sequence[str]],
    answer_context: str | None = None,
    batch_size: int = 32,
) -> ChoiceScores:
    """Score every choice of every multiple-choice question by its likelihood after the question.

    Taught in notebooks/09_gpt3.ipynb. contexts[q] is question q's prompt (with any worked
    examples before it, for few-shot scoring) and choices[q] its C candidate completions, the
    same number for every question. encode turns a string into token ids (a tokenizer's
    encode). A context and a choice are encoded separately and joined, so a choice has the same
    tokens after every context: start choices with their separating space (" soup"), as GPT-3's
    prompts do. With answer_context (a short neutral prompt such as "Answer:"), each choice is
    also scored after it alone, for the unconditional normalisation (Brown et al. 2020, §2.4).
    Returns a `ChoiceScores`; `.predict(method)` gives the answers. Raises ValueError for
    questions without choices or with different numbers of choices, and as
    `continuation_logprobs` does.
    """
    if isinstance(contexts, str) or len(contexts) != len(choices):
        raise ValueError("give one list of choices per context (contexts is a list of strings)")
    n_choices = {len(c) for c in choices} if len(choices) else {0}
    if len(n_choices) != 1 or 0 in n_choices or any(isinstance(c, str) for c in choices):
        raise ValueError(
            "every question needs the same number (>= 1) of choices, each a list of strings; got "
            f"{sorted(n_choices)} choice(s)"
        )
    C = n_choices.pop()
    flat_choices = [choice for row in choices for choice in row]
    choice_ids = [list(encode(choice)) for choice in flat_choices]
    context_ids = [list(encode(context)) for context in contexts for _ in range(C)]
    scored = continuation_logprobs(model, context_ids, choice_ids, batch_size)
    Q = len(contexts)
    unconditional = None
    if answer_context is not None:
        neutral = list(encode(answer_context))
        alone = continuation_logprobs(model, [neutral] * len(choice_ids), choice_ids, batch_size)
        unconditional = alone.logprobs.sum(1).view(Q, C)
    return ChoiceScores(
        logprob=scored.logprobs.sum(1).view(Q, C),
        n_tokens=scored.lengths.view(Q, C).float(),
        n_chars=torch.tensor([float(len(choice)) for choice in flat_choices]).view(Q, C),
        unconditional=unconditional,
    )


def zero_shot_classify(
    model: GPT,
    encode: Callable[[str], Sequence[int]],
    texts: Sequence[str],
    labels: Sequence[str],
    method: str = "sum",
    answer_context: str | None = None,
) -> torch.Tensor:
    """The label whose words the model finds likeliest after each text: (len(texts),) indices.

    Taught in notebooks/08_gpt2.ipynb. GPT-2 was tested on tasks it was never trained for by
    phrasing each as text to continue and reading which continuation the model prefers
    (Radford et al. 2019, §3). Each text (already phrased as a prompt) is scored with every
    label continuation by `score_choices`, and `method` (see `ChoiceScores.scores`) ranks them.
    """
    if isinstance(labels, str) or len(labels) < 2:
        raise ValueError(f"labels must be a list of at least two label strings, got {labels!r}")
    scores = score_choices(model, encode, texts, [list(labels)] * len(texts), answer_context)
    return scores.predict(method)
