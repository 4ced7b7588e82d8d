"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p) sampling,
and the one argument check that every sampling entry point shares.

Taught in notebooks/08_gpt2.ipynb. Temperature scaling divides the logits before the softmax;
top-k sampling keeps the k most likely tokens (GPT-2 used k = 2 for summaries, Radford et al.
2019, §3.6); nucleus sampling keeps the smallest set of tokens whose probability reaches top_p
(Holtzman et al. 2019).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple

import torch


class SamplingArgs(NamedTuple):
    """Sampling settings after `check_sampling_args`: plain Python numbers, or None if not given."""

    temperature: float
    top_k: int | None
    top_p: float | None
    max_new_tokens: int | None
    seed: int | None
    eos_token_id: int | None
    pad_token_id: int | None


def _is_bool(value: object) -> bool:
    return isinstance(value, bool) or getattr(value, "dtype", None) in (bool, torch.bool)


def check_integer(name: str, value: object, minimum: int, allowed: str) -> int:
    """`value` as a Python int, refusing bools, floats and anything below minimum.

    NumPy and 0-d torch integers are accepted (anything with __index__). Raises TypeError for
    a value that is not an integer, ValueError for one below minimum; both messages name the
    argument, the value and what is allowed.
    """
    if _is_bool(value):
        raise TypeError(f"{name} must be {allowed}, got the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be {allowed}, got {value!r} ({type(value).__name__})"
        ) from None
    if number < minimum:
        raise ValueError(f"{name} must be {allowed}, got {number}")
    return number


def check_real(name: str, value: object, allowed: str) -> float:
    """`value` as a finite Python float, refusing bools, text and NaN or inf.

    NumPy numbers and one-element tensors are accepted. Raises TypeError for a value that is
    not a real number, ValueError for NaN or inf; both messages name the argument, the value
    and what is allowed (the caller checks the range).
    """
    if _is_bool(value) or not (
        isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1)
    ):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {allowed}, got {number}")
    return number


def check_sampling_args(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    *,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    vocab_size: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> SamplingArgs:
    """Check the settings of any sampling entry point and return them as plain Python numbers.

    Taught in notebooks/08_gpt2.ipynb. `sample_next`, `filter_logits`, `GPT.generate`,
    `gptlib.inference.generate_batched` and `gptlib.speculative.speculative_generate` all call
    it, so a setting is refused the same way everywhere. Allowed: temperature a finite number >= 0 (0 means greedy); top_k a positive
    integer; top_p in (0, 1]; max_new_tokens an integer >= 0; seed an integer; eos_token_id and
    pad_token_id integers in [0, vocab_size). NumPy integers count as integers, bools do not.
    Arguments left at None are not checked. Raises TypeError for a value of the wrong type and
    ValueError for one out of range, naming the argument, the value and what is allowed.
    """
    temperature = check_real("temperature", temperature, "a finite number >= 0 (0 means greedy)")
    if temperature < 0:
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 means greedy), got {temperature}"
        )
    if top_k is not None:
        top_k = check_integer("top_k", top_k, 1, "a positive integer or None")
    if top_p is not None:
        top_p = check_real("top_p", top_p, "a number in (0, 1] or None")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p}")
    if max_new_tokens is not None:
        max_new_tokens = check_integer(
            "max_new_tokens", max_new_tokens, 0, "an integer >= 0 (0 returns the prompt)"
        )
    if seed is not None:
        seed = check_integer("seed", seed, -(2**63), "an integer or None")
        if seed >= 2**64:  # what torch.Generator.manual_seed can hold
            raise ValueError(f"seed must be an integer below 2**64 or None, got {seed}")
    ids = {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    for name, value in ids.items():
        if value is not None:
            allowed = (
                "a token id >= 0" if vocab_size is None else f"a token id in [0, {vocab_size})"
            )
            ids[name] = number = check_integer(name, value, 0, allowed)
            if vocab_size is not None and number >= vocab_size:
                raise ValueError(
                    f"{name}={number} is outside the model's vocabulary; it must be {allowed}"
                )
    return SamplingArgs(
        temperature, top_k, top_p, max_new_tokens, seed, ids["eos_token_id"], ids["pad_token_id"]
    )


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set of mass top_p.

    Taught in notebooks/08_gpt2.ipynb. logits (..., V) keep their shape. top_k keeps the k
    largest logits of each row (ties with the k-th are kept); top_p keeps, in order of
    probability, the tokens until their mass reaches top_p, always at least the most likely
    one. Raises as `check_sampling_args` does for a bad top_k or top_p, and TypeError for
    logits that are not a float tensor.
    """
    _, top_k, top_p, *_ = check_sampling_args(top_k=top_k, top_p=top_p)
    check_logits(logits)
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass;
        # the most likely token is always kept.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of logits (B, V); returns (B, 1) int64.

    Taught in notebooks/08_gpt2.ipynb. temperature 0 is greedy argmax (top_k and top_p then
    change nothing); otherwise the logits are divided by temperature, filtered by
    `filter_logits` and one token is drawn from the softmax with `generator` (torch's global
    random state when None). Raises as `check_sampling_args` does for a bad setting, TypeError
    for logits that are not a float (B, V) or (V,) tensor or a generator that is not a
    torch.Generator, and ValueError for logits that hold NaN (a model whose weights are not
    finite): argmax would silently pick token 0.
    """
    temperature, top_k, top_p, *_ = check_sampling_args(temperature, top_k, top_p)
    check_logits(logits, generator)
    if bool(torch.isnan(logits).any()):
        raise ValueError(NAN_LOGITS)
    return _sample(logits, temperature, top_k, top_p, generator)


NAN_LOGITS = (
    "the logits hold NaN, so no token can be chosen: the model's weights (or its inputs) are "
    "not finite, e.g. after a diverged training run or a float16 overflow"
)


def check_logits(logits: object, generator: object = None) -> None:
    """Raise TypeError unless logits is a float (B, V) or (V,) tensor and generator a
    torch.Generator or None (what `sample_next` and `filter_logits` take)."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        what = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(
            f"logits must be a float tensor (B, vocab_size), got {what}; make one with "
            "torch.tensor([[2.0, 1.0, ...]]) or logits.float()"
        )
    if logits.dim() not in (1, 2):
        raise TypeError(
            f"logits must be (B, vocab_size), one row per sequence, got shape "
            f"{tuple(logits.shape)}; for a model's output take its last position: logits[:, -1]"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}; "
            "make one with torch.Generator().manual_seed(seed)"
        )


def _sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """sample_next without the check, for loops that checked their settings once."""
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)
    try:
        return torch.multinomial(probs, num_samples=1, generator=generator)
    except RuntimeError as err:  # torch's "probability tensor contains either inf, nan ..."
        if "probability tensor" not in str(err):
            raise
        raise ValueError(
            NAN_LOGITS.replace("hold NaN", "hold NaN or +inf (or a row is all -inf)")
        ) from None
