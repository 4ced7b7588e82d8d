"""Faster inference: int8 weight quantization, batched generation, greedy speculative decoding.

Taught in notebooks/14_inference.ipynb.

Three tricks that change how a trained GPT is run, not what it computes (or barely):

- `quantize_int8` stores every linear layer's weight as int8 with one float scale per output
  channel (symmetric, weight-only): four times fewer bytes than float32 for those matrices,
  dequantized on the fly in `Int8Linear.forward`.
- `generate_batched` generates for many prompts of different lengths in one batch: padded on
  the left, with an attention mask, so that every row equals its prompt generated alone.
- `speculative_generate` lets a small draft model guess k tokens that the target checks in one
  forward pass (Leviathan et al. 2023; Chen et al. 2023). With greedy decoding its output is
  exactly the target's own greedy output; only the number of target passes changes.
"""

from __future__ import annotations

import contextlib
import copy
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .generation import left_pad
from .model import GPT
from .sampling import check_integer, check_sampling_args

__all__ = [
    "Int8Linear",
    "SpeculativeStats",
    "dequantize_per_channel",
    "generate_batched",
    "model_bytes",
    "quantize_int8",
    "quantize_per_channel",
    "speculative_generate",
]


# ---------------------------------------------------------------------------- quantization
def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a (out, in) weight to int8 with one symmetric scale per output row: (int8, scales).

    Taught in notebooks/14_inference.ipynb. Row r is stored as round(w / s_r) with
    s_r = max|w_r| / 127, so the largest weight of each row maps to ±127 and zero stays zero.
    Raises TypeError for a weight that is no tensor, ValueError for one that is not a 2-D
    float tensor or holds NaN or inf (whose rows would all dequantize to NaN).
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a 2-D float tensor, got {type(weight).__name__}")
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(
            f"weight must be a 2-D float tensor (out_features, in_features), got "
            f"{tuple(weight.shape)} {weight.dtype}"
        )
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(
            "weight holds NaN or inf, which int8 cannot store: the model's weights are broken "
            "(a diverged run?); quantize a finite model"
        )
    scale = weight.detach().abs().amax(dim=1).float() / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    q = torch.clamp(torch.round(weight.detach().float() / scale[:, None]), -127, 127)
    return q.to(torch.int8), scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Turn int8 rows and their scales back into a float32 weight: q * scale per row.

    Taught in notebooks/14_inference.ipynb. q is (out, in) int8 and scale (out,) float, as
    `quantize_per_channel` returns them; anything else raises TypeError or ValueError (a float
    q was multiplied as it was, a scale of another length broadcast or failed in torch).
    """
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or q.dim() != 2:
        got = f"{q.dtype} {tuple(q.shape)}" if isinstance(q, torch.Tensor) else type(q).__name__
        raise TypeError(f"q must be a 2-D int8 tensor from quantize_per_channel, got {got}")
    if (
        not isinstance(scale, torch.Tensor)
        or not scale.is_floating_point()
        or tuple(scale.shape) != (q.size(0),)
    ):
        got = (
            f"{scale.dtype} {tuple(scale.shape)}"
            if isinstance(scale, torch.Tensor)
            else type(scale).__name__
        )
        raise ValueError(
            f"scale must be a float tensor of shape ({q.size(0)},), one per row of q, got {got}"
        )
    return q.float() * scale[:, None]


class Int8Linear(nn.Module):
    """A linear layer whose weight is kept as int8 plus one float scale per output channel."""

    def __init__(self, q_weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = q_weight.size(1), q_weight.size(0)
        self.register_buffer("q_weight", q_weight)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize an nn.Linear's weight per output channel; the bias stays in float."""
        q, scale = quantize_per_channel(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = dequantize_per_channel(self.q_weight, self.scale).to(x.dtype)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Return a copy of model with every nn.Linear replaced by an `Int8Linear`.

    Taught in notebooks/14_inference.ipynb. Embeddings and norms stay in float. A linear layer
    whose weight is shared with another module (GPT's lm_head tied to the token embedding) is
    left in float too: quantizing it would either untie it or keep a float copy anyway. The
    original model is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_int8 needs a torch.nn.Module, got {type(model).__name__}")
    quantized = copy.deepcopy(model)
    owners: dict[int, int] = {}
    for module in quantized.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    for parent in list(quantized.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and owners[id(child.weight)] == 1:
                setattr(parent, name, Int8Linear.from_linear(child))
    return quantized


def model_bytes(model: nn.Module) -> int:
    """Bytes taken by a model's parameters and buffers, counting a shared tensor once.

    Taught in notebooks/14_inference.ipynb. Raises TypeError for anything but a torch module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_bytes needs a torch.nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


# ---------------------------------------------------------------------------- batching
def generate_batched(
    model: GPT, prompts: Sequence[Sequence[int]], max_new_tokens: int, **generate_kwargs
) -> list[list[int]]:
    """Generate for prompts of any lengths in one left-padded batch; returns token-id lists.

    Taught in notebooks/14_inference.ipynb. The prompts are padded on the left
    (`gptlib.generation.left_pad`) and run as one `GPT.generate` call with their
    attention_mask, so each row's positions count from its own first token; with greedy
    decoding every row equals its prompt generated alone. Returns each prompt followed by its
    new tokens (a row that met eos_token_id or a stop sequence ends there), in the order of
    prompts. generate_kwargs go to `GPT.generate` (temperature, seed, eos_token_id, stop, ...);
    settings are checked as `gptlib.sampling.check_sampling_args` does, also for no prompts.
    prompts may be a list of token-id lists or a 2-D tensor (one row per prompt); one flat list
    of ids, text, or a model that is no GPT raises TypeError.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a gptlib GPT, got {type(model).__name__}")
    if isinstance(prompts, torch.Tensor) and prompts.dim() == 2:
        prompts = prompts.tolist()
    if (
        isinstance(prompts, Sequence)
        and not isinstance(prompts, str)
        and any(_is_one_id(p) for p in prompts)
    ):
        raise TypeError(
            "prompts must be a list of prompts, each a list of token ids; wrap one prompt as [ids]"
        )
    for name in ("attention_mask", "return_logprobs"):
        if name in generate_kwargs:
            raise TypeError(f"generate_batched sets {name} itself; call GPT.generate for it")
    check_sampling_args(
        generate_kwargs.get("temperature", 1.0),
        generate_kwargs.get("top_k"),
        generate_kwargs.get("top_p"),
        max_new_tokens=max_new_tokens,
    )
    if len(prompts) == 0:
        return []
    device = next(model.parameters()).device
    idx, mask = left_pad(prompts, device=device)
    result = model.generate(
        idx, max_new_tokens, attention_mask=mask, return_logprobs=True, **generate_kwargs
    )
    pad = idx.size(1) - mask.sum(dim=1)
    ends = idx.size(1) + result.new_lengths
    return [
        row[start:end]
        for row, start, end in zip(result.ids.tolist(), pad.tolist(), ends.tolist(), strict=True)
    ]


def _is_one_id(value: object) -> bool:
    """Whether value is a single integer (a token id), not a list of them."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.ndim == 0
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------------------- speculative decoding
@dataclass
class SpeculativeStats:
    """What speculative decoding did: passes of each model and how many guesses were kept."""

    new_tokens: int = 0
    target_calls: int = 0  # target forward passes (each checks a whole block of guesses)
    draft_calls: int = 0  # draft forward passes (one per guessed token)
    proposed: int = 0  # tokens the draft guessed
    accepted: int = 0  # guesses that matched the target's greedy choice

    @property
    def acceptance_rate(self) -> float:
        """Share of the draft's guesses that the target kept."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def target_calls_saved(self) -> int:
        """Target passes saved against plain decoding, which needs one per new token."""
        return self.new_tokens - self.target_calls


def _greedy_after_prefixes(target: GPT, seq: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """Target's greedy next token after each prefix seq[:, :p], p = n..len; and passes used.

    Each prediction sees exactly what `GPT.generate` would: with learned positions only the
    prefix's last block_size tokens, numbered from 0. Prefixes that fit in block_size share one
    pass over the start of seq; longer ones go as one batch of block_size windows.
    """
    total = seq.size(1)
    limit = target.config.block_size if target.config.position == "learned" else total
    lengths = list(range(n, total + 1))
    short = [p for p in lengths if p <= limit]
    long = [p for p in lengths if p > limit]
    picks, calls = [], 0
    if short:
        logits = target(seq[:, : short[-1]]).logits[0]
        picks.append(logits[[p - 1 for p in short]].argmax(-1))
        calls += 1
    if long:
        windows = torch.cat([seq[:, p - limit : p] for p in long])
        picks.append(target(windows).logits[:, -1].argmax(-1))
        calls += 1
    return torch.cat(picks), calls


def speculative_generate(
    target: GPT, draft: GPT, idx: torch.Tensor, max_new_tokens: int, k: int = 4
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Greedy speculative decoding: equal to target.generate(idx, n, temperature=0), fewer passes.

    Taught in notebooks/14_inference.ipynb. Each round the draft proposes k tokens greedily; the
    target scores all of them at once; the longest prefix of guesses that agrees with the
    target's own greedy choices is kept, followed by the target's token at the first
    disagreement (or after the last guess). idx is one sequence, shape (1, T). Returns the
    extended sequence and a `SpeculativeStats`.
    """
    for name, model in (("target", target), ("draft", draft)):
        if not isinstance(model, GPT):
            raise TypeError(f"{name} must be a gptlib GPT, got {type(model).__name__}")
    if not isinstance(idx, torch.Tensor):
        raise TypeError(
            f"idx must be a (1, T) tensor of token ids, got {type(idx).__name__}; wrap one "
            "prompt as torch.tensor([ids])"
        )
    k = check_integer("k", k, 1, "an integer >= 1 (guesses per round)")
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, 0, "an integer >= 0")
    if idx.dim() != 2 or idx.size(0) != 1 or idx.size(1) == 0:
        raise ValueError(
            f"idx must be one non-empty sequence of shape (1, T), got {tuple(idx.shape)}; "
            "run the prompts of a batch one at a time"
        )
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(
            f"draft vocab_size={draft.config.vocab_size} differs from target's "
            f"{target.config.vocab_size}; the draft must use the target's tokenizer"
        )
    stats = SpeculativeStats()
    was_training = target.training
    target.eval()
    seq = idx
    with torch.inference_mode(), _restoring_mode(target, was_training):
        while stats.new_tokens < max_new_tokens:
            n = seq.size(1)
            n_guess = min(k, max_new_tokens - stats.new_tokens - 1)
            guessed = draft.generate(seq, n_guess, temperature=0.0) if n_guess else seq
            stats.draft_calls += n_guess
            choices, calls = _greedy_after_prefixes(target, guessed, n)
            stats.target_calls += calls
            guesses = guessed[0, n:]
            agree = (guesses == choices[:n_guess]).int()
            n_ok = int(agree.cumprod(0).sum()) if n_guess else 0
            kept = torch.cat([guesses[:n_ok], choices[n_ok : n_ok + 1]])
            seq = torch.cat([seq, kept[None]], dim=1)
            stats.proposed += n_guess
            stats.accepted += n_ok
            stats.new_tokens += len(kept)
    return seq.clone(), stats


@contextlib.contextmanager
def _restoring_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put the model back in train or eval mode when the block ends, also after an error."""
    try:
        yield
    finally:
        model.train(training)
