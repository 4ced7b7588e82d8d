"""The language-model loss: mean next-token cross-entropy, with positions that are ignored.

Taught in notebooks/02_first_gpt.ipynb. `GPT.forward` and `finetune.SequenceClassifier` both
compute their losses here, so both read the same ignore values and refuse the same bad targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "IGNORE_VALUES", "cross_entropy_loss"]

# A target equal to one of these is ignored by the loss: -100 is PyTorch's and transformers'
# ignore_index, -1 the value gptlib's own batches (finetune.collate) have always used.
IGNORE_INDEX = -100
IGNORE_VALUES = (IGNORE_INDEX, -1)


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, in float32, of logits (..., V) against integer targets (...).

    Taught in notebooks/02_first_gpt.ipynb (the training loss). A target of -100 (PyTorch's and
    transformers' ignore_index) or -1 (gptlib's batches) leaves its position out of the mean.
    When every target is ignored the loss is a zero that keeps the autograd graph (the sum over
    no positions), so backward() and an optimizer step run and change nothing, where a mean
    over no positions would be NaN and fill the weights with NaN. The logits are cast to
    float32 first, so a bfloat16 or float16 model still gets a float32 loss. Raises TypeError
    for targets that are not an integer tensor, ValueError for a shape other than
    logits.shape[:-1] or a target outside [0, V) that is not an ignore value.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
        raise TypeError(
            f"logits must be a tensor (..., V), got {type(logits).__name__}; the model's "
            "output holds them as out.logits"
        )
    if not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"targets must be a tensor of token ids, got {type(targets).__name__}; "
            "wrap a list with torch.tensor(...)"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor (torch.long), got {targets.dtype}")
    vocab_size = logits.size(-1)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets have shape {tuple(targets.shape)}, but the logits need one target per "
            f"position, shape {tuple(logits.shape[:-1])}"
        )
    targets = targets.long()
    ignored = (targets == IGNORE_VALUES[0]) | (targets == IGNORE_VALUES[1])
    bad = ~ignored & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"target {int(targets[where])} at position {where} is outside [0, {vocab_size}), "
            "the logits' classes (a language model's vocabulary); use -100 (or -1) to ignore "
            "a position"
        )
    total = F.cross_entropy(
        logits.reshape(-1, vocab_size).float(),
        targets.masked_fill(ignored, IGNORE_INDEX).reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / (~ignored).sum().clamp(min=1)
