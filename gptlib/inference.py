"""Faster inference: batched generation, and the chapter's other tricks gathered in one place.

Taught in notebooks/14_inference.ipynb. `generate_batched` generates for many prompts of
different lengths in one batch: padded on the left, with an attention mask, so that every row
equals its prompt generated alone. Quantization lives in `gptlib.quantization` and speculative
decoding in `gptlib.speculative`; their public names are importable from here too.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch

from .generation import left_pad
from .model import GPT
from .quantization import (
    Int8Linear,
    dequantize_absmax,
    dequantize_per_channel,
    fake_quantize_weights,
    int8_matmul,
    model_bytes,
    quantize_absmax,
    quantize_int8,
    quantize_per_channel,
)
from .sampling import check_sampling_args
from .speculative import (
    SpeculativeStats,
    expected_speedup,
    expected_tokens_per_pass,
    modified_rejection_sampling,
    speculative_generate,
)

__all__ = [
    "Int8Linear",
    "SpeculativeStats",
    "dequantize_absmax",
    "dequantize_per_channel",
    "expected_speedup",
    "expected_tokens_per_pass",
    "fake_quantize_weights",
    "generate_batched",
    "int8_matmul",
    "model_bytes",
    "modified_rejection_sampling",
    "quantize_absmax",
    "quantize_int8",
    "quantize_per_channel",
    "speculative_generate",
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
