"""Speculative decoding: a small draft model guesses the next tokens and the target model checks
all the guesses in one forward pass, keeping exactly the target's output distribution.

Taught in notebooks/14_inference.ipynb. Leviathan et al. 2023 (§2.3, Algorithm 1) and Chen et al.
2023 (Algorithm 2) give the rule: the draft samples k guesses x_i from its distributions q_i;
the target's distributions p_i after every prefix come from one pass; guess i is accepted with
probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection the token is drawn from
norm(max(0, p_i - q_i)) instead, and if every guess is accepted one more token is drawn from
the target. Each token then has exactly the target's distribution (Leviathan et al. 2023, §A.1),
for any draft. Greedy decoding (temperature 0) is the case where p and q put all their mass on
one token: a guess is kept when it is the target's argmax, and the output is the target's own
greedy output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention import KVCache
from .generation import _check_prompt, _restore_mode
from .model import GPT
from .sampling import check_integer, check_sampling_args, filter_logits

__all__ = [
    "SpeculativeStats",
    "expected_speedup",
    "expected_tokens_per_pass",
    "modified_rejection_sampling",
    "speculative_generate",
]


@dataclass
class SpeculativeStats:
    """What speculative decoding did: passes of each model, guesses made, checked and kept."""

    new_tokens: int = 0
    rounds: int = 0  # draft-then-check rounds; each adds 1 to k + 1 tokens
    target_calls: int = 0  # target forward passes (one per round, two past a learned block_size)
    draft_calls: int = 0  # draft forward passes (one per guess)
    proposed: int = 0  # guesses the draft made
    accepted: int = 0  # guesses the target kept
    rejected: int = 0  # guesses the target rejected (at most one per round)
    beta_sum: float = 0.0  # sum of sum_x min(p, q) over the checked guesses
    accepted_per_round: list[int] = field(default_factory=list)
    guesses_per_round: list[int] = field(default_factory=list)

    @property
    def checked(self) -> int:
        """Guesses the target decided on: those accepted and the first rejected one per round."""
        return self.accepted + self.rejected

    @property
    def acceptance_rate(self) -> float:
        """Share of the checked guesses that the target kept (0 if none was checked)."""
        return self.accepted / self.checked if self.checked else 0.0

    @property
    def alpha(self) -> float:
        """Mean of beta = sum_x min(p(x), q(x)) over the checked guesses: the estimate of alpha.

        beta is the probability that a guess drawn from q is accepted (Leviathan et al. 2023,
        Theorem 3.5) and alpha its expectation (Corollary 3.6), the quantity in Eq. 1.
        """
        return self.beta_sum / self.checked if self.checked else 0.0

    @property
    def tokens_per_target_call(self) -> float:
        """New tokens per target forward pass (plain decoding makes 1)."""
        return self.new_tokens / self.target_calls if self.target_calls else 0.0

    @property
    def target_calls_saved(self) -> int:
        """Target passes saved against plain decoding, which needs one per new token."""
        return self.new_tokens - self.target_calls


def expected_tokens_per_pass(alpha: float, k: int) -> float:
    """Expected tokens one round adds: (1 - alpha^(k+1)) / (1 - alpha), k + 1 when alpha = 1.

    Taught in notebooks/14_inference.ipynb. Leviathan et al. 2023, Eq. 1: with acceptances
    independent with probability alpha, the tokens per target pass follow a geometric law
    capped at k + 1. Raises ValueError for alpha outside [0, 1] or k < 1.
    """
    alpha = _check_fraction("alpha", alpha)
    k = check_integer("k", k, 1, "a positive integer (guesses per round)")
    return float(k + 1) if alpha == 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)


def expected_speedup(alpha: float, k: int, c: float) -> float:
    """Expected wall-time factor of speculative over plain decoding: E / (k·c + 1).

    Taught in notebooks/14_inference.ipynb. Leviathan et al. 2023, Theorem 3.8: a round costs k
    draft passes (c target passes each, c = cost of a draft pass / cost of a target pass) and
    one target pass, assumed to cost the same for k + 1 tokens as for one, and adds
    `expected_tokens_per_pass(alpha, k)` tokens. Below 1 it is a slow-down. Raises ValueError
    for alpha outside [0, 1], k < 1 or c < 0.
    """
    c = float(c)
    if not c >= 0:
        raise ValueError(f"c (draft pass cost / target pass cost) must be >= 0, got {c}")
    return expected_tokens_per_pass(alpha, k) / (k * c + 1)


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) along the last dimension: where a rejected guess's token comes from.

    Where p equals q to rounding (a rejection then has probability 0), p itself.
    """
    residual = (p - q).clamp(min=0)
    total = residual.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, residual / total.clamp(min=1e-30), p)


def modified_rejection_sampling(
    p: torch.Tensor,
    q: torch.Tensor,
    guesses: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decide on a round's guesses: how many are accepted, and the token that follows them.

    Taught in notebooks/14_inference.ipynb. Leviathan et al. 2023, Algorithm 1 (after the
    draft and target passes); Chen et al. 2023, Algorithm 2. p (..., k + 1, V) holds the
    target's next-token probabilities after the prefix and after each guess, q (..., k, V)
    the draft's, guesses (..., k) the draft's tokens, drawn from q. Guess i is accepted when
    r_i · q_i(x_i) < p_i(x_i) with r_i uniform in [0, 1), i.e. with probability
    min(1, p_i/q_i); n is the number accepted before the first rejection. The next token is
    drawn from norm(max(0, p_{n+1} - q_{n+1})) after a rejection and from p_{k+1} when all k
    were accepted. Leading dimensions are independent rounds, all drawn from generator.
    Returns (n (...,) int64, next token (...,) int64).
    """
    if p.dim() < 2 or q.shape != (*p.shape[:-2], p.size(-2) - 1, p.size(-1)):
        raise ValueError(
            f"p must be (..., k + 1, V) and q (..., k, V); got p {tuple(p.shape)} and q "
            f"{tuple(q.shape)}"
        )
    if guesses.shape != q.shape[:-1]:
        raise ValueError(
            f"guesses must be (..., k) = {tuple(q.shape[:-1])}, got {tuple(guesses.shape)}"
        )
    k = q.size(-2)
    index = guesses.unsqueeze(-1)
    p_guess = p[..., :k, :].gather(-1, index).squeeze(-1)
    q_guess = q.gather(-1, index).squeeze(-1)
    r = torch.rand(q_guess.shape, generator=generator, device=p.device, dtype=p.dtype)
    accepted = (r * q_guess < p_guess).long()
    n = accepted.cumprod(dim=-1).sum(dim=-1)
    # The distribution of the next token: residual at the first rejection, p_{k+1} after all.
    padded_q = torch.cat([q, torch.zeros_like(p[..., :1, :])], dim=-2)
    at = n[..., None, None].expand(*n.shape, 1, p.size(-1))
    p_next = p.gather(-2, at).squeeze(-2)
    q_next = padded_q.gather(-2, at).squeeze(-2)
    dist = torch.where((n < k)[..., None], _residual(p_next, q_next), p_next)
    flat = dist.reshape(-1, dist.size(-1))
    token = torch.multinomial(flat, 1, generator=generator).reshape(n.shape)
    return n, token


def _probabilities(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """The sampling distribution (n, V) that `GPT.generate` draws from, for each row of logits."""
    if temperature == 0.0:
        probs = torch.zeros_like(logits, dtype=torch.float32)
        return probs.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)


class _Scorer:
    """A model's next-token logits after prefixes of a growing sequence, through a KV cache that
    can take back the tokens of rejected guesses."""

    def __init__(self, model: GPT, use_cache: bool, max_length: int) -> None:
        config = model.config
        self.model = model
        self.limit = config.block_size if config.position == "learned" else None
        capacity = max_length if self.limit is None else min(max_length, self.limit)
        # A local layer's rolling buffer cannot be cropped once it wraps round.
        wraps = any(
            config.layer_layout(i) == "local" and config.window_size < capacity
            for i in range(config.n_layer)
        )
        self.cache = KVCache(config.n_layer, capacity) if use_cache and not wraps else None
        self.calls = 0

    def logits_after(self, seq: torch.Tensor, first: int) -> torch.Tensor:
        """Logits (L - first + 1, V) after each prefix seq[:, :p], p = first..L (L = seq length).

        Each row is what `GPT.generate` computes for that prefix: past a learned block_size,
        from the prefix's last block_size tokens, without the cache.
        """
        length = seq.size(1)
        if self.cache is not None and self.limit is not None and length > self.limit:
            self.cache = None  # learned positions end at block_size: the window must slide
        n_rows = length - first + 1
        if self.cache is not None:
            self.calls += 1
            fed = seq[:, self.cache.length : length]
            return self.model(fed, kv_cache=self.cache, logits_to_keep=n_rows).logits[0]
        limit = length if self.limit is None else self.limit
        short = [p for p in range(first, length + 1) if p <= limit]
        long = [p for p in range(first, length + 1) if p > limit]
        rows = []
        if short:
            self.calls += 1
            logits = self.model(seq[:, : short[-1]], logits_to_keep=len(short)).logits[0]
            rows.append(logits)
        if long:
            self.calls += 1
            windows = torch.cat([seq[:, p - limit : p] for p in long])
            rows.append(self.model(windows, logits_to_keep=1).logits[:, -1])
        return torch.cat(rows)

    def keep(self, length: int) -> None:
        """Take back every cached token after the first length."""
        if self.cache is not None and self.cache.length > length:
            self.cache.crop(length)


def speculative_generate(
    target: GPT,
    draft: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    k: int = 4,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Sample like target.generate(idx, max_new_tokens, ...), with a draft guessing k tokens a round.

    Taught in notebooks/14_inference.ipynb. Each round the draft samples up to k guesses; the
    target scores them in one pass; `modified_rejection_sampling` keeps the accepted ones and
    adds one token of the target's (Leviathan et al. 2023, Algorithm 1; Chen et al. 2023,
    Algorithm 2), so every round adds 1 to k + 1 tokens. The output has exactly the
    distribution of target.generate with the same temperature, top_k and top_p, which are
    applied alike to the target's and the draft's logits before the rule (Leviathan et al.
    2023, §2.2). temperature=0 is greedy: the output then equals
    target.generate(idx, max_new_tokens, temperature=0) token for token. Samples come from
    generator (or a new one seeded with seed); they differ from target.generate's for the
    same seed, since the random draws differ.

    idx is one prompt, shape (1, T): batches are not supported. use_cache=True keeps a KV
    cache for each model and crops it back after a rejection (`KVCache.crop`); a model with
    local-window layers narrower than the sequence, or one whose learned positions run past
    block_size, goes on without its cache. Returns the extended sequence (1, T +
    max_new_tokens) and a `SpeculativeStats`. Raises ValueError or TypeError for a batch, a
    bad sampling setting (`check_sampling_args`), k < 1, different vocabularies, or both seed
    and generator; TypeError for a target or draft that is no GPT and an idx that is no tensor.
    """
    for name, model in (("target", target), ("draft", draft)):
        if not isinstance(model, GPT):
            raise TypeError(f"{name} must be a gptlib GPT, got {type(model).__name__}")
    if not isinstance(idx, torch.Tensor):
        raise TypeError(
            f"idx must be a (1, T) tensor of token ids, got {type(idx).__name__}; wrap one "
            "prompt as torch.tensor([ids])"
        )
    config = target.config
    args = check_sampling_args(
        temperature, top_k, top_p, max_new_tokens=max_new_tokens, seed=seed,
        vocab_size=config.vocab_size,
    )  # fmt: skip
    k = check_integer("k", k, 1, "a positive integer (guesses per round)")
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    batch, prompt_length = _check_prompt(idx, config.vocab_size)
    if batch != 1:
        raise ValueError(
            f"idx must be one sequence of shape (1, T), got {tuple(idx.shape)}; speculative "
            "decoding here runs one prompt at a time"
        )
    if draft.config.vocab_size != config.vocab_size:
        raise ValueError(
            f"draft vocab_size={draft.config.vocab_size} differs from target's "
            f"{config.vocab_size}; the draft must use the target's tokenizer"
        )
    if args.seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(args.seed)
    greedy = args.temperature == 0.0
    total = prompt_length + args.max_new_tokens

    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return _probabilities(logits, args.temperature, args.top_k, args.top_p)

    stats = SpeculativeStats()
    tokens = idx.new_zeros(1, total)
    tokens[:, :prompt_length] = idx
    n = prompt_length  # tokens decided so far
    with (
        torch.inference_mode(),
        _restore_mode(target, target.training),
        _restore_mode(draft, draft.training),
    ):
        target.eval()
        draft.eval()
        scorers = _Scorer(target, use_cache, total), _Scorer(draft, use_cache, total)
        target_scorer, draft_scorer = scorers
        while n < total:
            n_guess = min(k, total - n - 1)  # the round's own token must fit too
            q = []
            for i in range(n_guess):
                q_i = probabilities(draft_scorer.logits_after(tokens[:, : n + i], n + i))[-1]
                guess = q_i.argmax() if greedy else torch.multinomial(q_i, 1, generator=generator)
                tokens[0, n + i] = guess.reshape(())
                q.append(q_i)
            p = probabilities(target_scorer.logits_after(tokens[:, : n + n_guess], n))
            guesses = tokens[0, n : n + n_guess]
            q = torch.stack(q) if q else p[:0]
            if greedy:  # no random draws: keep guesses while they are the target's argmax
                agree = (guesses == p[:n_guess].argmax(dim=-1)).long()
                n_ok = int(agree.cumprod(0).sum())
                next_token = p[n_ok].argmax()
            else:
                n_ok, next_token = modified_rejection_sampling(p, q, guesses, generator)
                n_ok = int(n_ok)
            checked = min(n_ok + 1, n_guess)
            stats.beta_sum += float(torch.minimum(p[:checked], q[:checked]).sum())
            tokens[0, n + n_ok] = next_token
            n += n_ok + 1
            target_scorer.keep(n - 1)
            draft_scorer.keep(n - 1)
            stats.rounds += 1
            stats.proposed += n_guess
            stats.accepted += n_ok
            stats.rejected += int(n_ok < n_guess)
            stats.accepted_per_round.append(n_ok)
            stats.guesses_per_round.append(n_guess)
        stats.new_tokens = n - prompt_length
        stats.target_calls, stats.draft_calls = target_scorer.calls, draft_scorer.calls
    return tokens, stats
