"""Quantization: weights (and activations) as small integers with one scale per row or per group,
and LLM.int8()'s mixed-precision decomposition for outlier features.

Taught in notebooks/14_inference.ipynb.

- `quantize_absmax` rounds a matrix to signed b-bit integers with absmax scales: one per row,
  or one per group of `group_size` consecutive columns of each row (the group-wise scales of
  int4 weight formats; AWQ uses groups of 128 inputs, Lin et al. 2023, §5.1).
- `quantize_int8` stores every linear layer's weight as int8 with one scale per output channel
  (`Int8Linear`): four times fewer bytes than float32, dequantized on the fly (weight-only).
- `fake_quantize_weights` rounds every linear weight to b bits and back, to measure what a
  format costs in accuracy without writing its kernel.
- `int8_matmul` multiplies in int8 as LLM.int8() does (Dettmers et al. 2022, §3): each row of
  the input (a token) and each row of the weight (an output channel) get their own scale
  (vector-wise quantization); input features that hold a value of magnitude >= the outlier
  threshold are multiplied in 16-bit instead (mixed-precision decomposition, §3.2).
"""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .sampling import check_integer

__all__ = [
    "Int8Linear",
    "dequantize_absmax",
    "dequantize_per_channel",
    "fake_quantize_weights",
    "int8_matmul",
    "model_bytes",
    "quantize_absmax",
    "quantize_int8",
    "quantize_per_channel",
]


def quantize_absmax(
    x: torch.Tensor, bits: int = 8, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a (rows, cols) float tensor to signed bits-bit integers with absmax scales.

    Taught in notebooks/14_inference.ipynb. Each row, or each group of group_size consecutive
    columns of a row, gets the scale s = max|group| / (2^(bits-1) - 1), and x becomes
    q = round(x / s): the group's largest value maps to ±(2^(bits-1) - 1) and zero stays zero
    (absmax quantization, Dettmers et al. 2022, §2.1). For a weight (out, in) the groups run
    along the input dimension. Returns q (rows, cols) int8 and scales (rows, cols / group_size)
    float32 (one column per row when group_size is None). The rounding error of each value is
    at most half its group's s. Raises TypeError for a non-tensor, ValueError for another
    shape, NaN or inf values, bits outside 2..8, or a group_size that does not divide cols.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"expected a 2-D float tensor (rows, cols) as weight, got {type(x).__name__}"
        )
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"expected a 2-D float tensor (rows, cols), got {tuple(x.shape)} {x.dtype}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            "the tensor holds NaN or inf, which integers cannot store (its groups would all "
            "dequantize to NaN): the weights are broken (a diverged run?); quantize a finite model"
        )
    bits = check_integer("bits", bits, 2, "an integer from 2 to 8")
    if bits > 8:
        raise ValueError(f"bits must be an integer from 2 to 8 (stored in int8), got {bits}")
    rows, cols = x.shape
    size = (
        cols
        if group_size is None
        else check_integer("group_size", group_size, 1, "a positive integer or None")
    )
    if cols % size:
        raise ValueError(
            f"group_size={size} does not divide the {cols} columns; pick a divisor of {cols}"
        )
    level = 2 ** (bits - 1) - 1
    groups = x.detach().float().reshape(rows, cols // size, size)
    scale = groups.abs().amax(dim=2) / level
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    q = torch.clamp(torch.round(groups / scale[:, :, None]), -level, level)
    return q.reshape(rows, cols).to(torch.int8), scale


def dequantize_absmax(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Turn integers and their scales from `quantize_absmax` back into a float32 tensor.

    Taught in notebooks/14_inference.ipynb. q (rows, cols) int8, scale (rows, n_groups) float,
    n_groups dividing cols. Raises TypeError for a q that is no 2-D int8 tensor and ValueError
    for a scale of another shape (it would broadcast or fail deep in torch).
    """
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or q.dim() != 2:
        got = f"{q.dtype} {tuple(q.shape)}" if isinstance(q, torch.Tensor) else type(q).__name__
        raise TypeError(f"q must be a 2-D int8 tensor from quantize_absmax, got {got}")
    rows, cols = q.shape
    if (
        not isinstance(scale, torch.Tensor)
        or not scale.is_floating_point()
        or scale.dim() != 2
        or scale.size(0) != rows
        or scale.size(1) == 0
        or cols % scale.size(1)
    ):
        got = (
            f"{scale.dtype} {tuple(scale.shape)}"
            if isinstance(scale, torch.Tensor)
            else type(scale).__name__
        )
        raise ValueError(
            f"scale must be a float tensor of shape ({rows}, n_groups) with n_groups dividing "
            f"{cols}, as quantize_absmax returns it, got {got}"
        )
    return _dequantize(q, scale)


def _dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q (rows, cols) times its group scales (rows, n_groups), unchecked: for forward passes."""
    rows, cols = q.shape
    groups = scale.size(1)
    return (q.float().reshape(rows, groups, cols // groups) * scale[:, :, None]).reshape(rows, cols)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round a (out, in) weight to int8 with one symmetric scale per output row: (int8, scales).

    Taught in notebooks/14_inference.ipynb. Row r is stored as round(w / s_r) with
    s_r = max|w_r| / 127, so the largest weight of each row maps to ±127 and zero stays zero.
    scales has shape (out,). `quantize_absmax` with 8 bits and one group per row.
    """
    q, scale = quantize_absmax(weight, bits=8)
    return q, scale[:, 0]


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Turn int8 rows and their scales back into a float32 weight: q * scale per row.

    Taught in notebooks/14_inference.ipynb. q (out, in) int8, scale (out,) float, as
    `quantize_per_channel` returns them; anything else raises TypeError or ValueError.
    """
    rows = q.size(0) if isinstance(q, torch.Tensor) and q.dim() else "out"
    if not isinstance(scale, torch.Tensor) or scale.dim() != 1 or scale.size(0) != rows:
        got = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(f"scale must be a float tensor of shape ({rows},), one per row, got {got}")
    return dequantize_absmax(q, scale[:, None])


class Int8Linear(nn.Module):
    """A linear layer whose weight is kept as int8 plus one float scale per output channel.

    Taught in notebooks/14_inference.ipynb. forward dequantizes the weight and multiplies in
    float (weight-only quantization): it saves memory, not arithmetic.
    """

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
        # The buffers came from quantize_per_channel: no argument checks on every forward pass.
        weight = _dequantize(self.q_weight, self.scale[:, None]).to(x.dtype)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _replace_linears(model: nn.Module, make: object, name: str) -> nn.Module:
    """A copy of model whose unshared nn.Linear layers are replaced by make(linear)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} needs a torch.nn.Module, got {type(model).__name__}")
    result = copy.deepcopy(model)
    owners: dict[int, int] = {}
    for module in result.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    for parent in list(result.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and owners[id(child.weight)] == 1:
                setattr(parent, child_name, make(child))
    return result


def quantize_int8(model: nn.Module) -> nn.Module:
    """Return a copy of model with every nn.Linear replaced by an `Int8Linear`.

    Taught in notebooks/14_inference.ipynb. Embeddings and norms stay in float. A linear layer
    whose weight is shared with another module (GPT's lm_head tied to the token embedding) is
    left in float too: quantizing it would either untie it or keep a float copy anyway. The
    original model is not changed.
    """
    return _replace_linears(model, Int8Linear.from_linear, "quantize_int8")


def fake_quantize_weights(
    model: nn.Module, bits: int = 4, group_size: int | None = None
) -> nn.Module:
    """A copy of model whose linear weights are rounded to bits-bit integers and back.

    Taught in notebooks/14_inference.ipynb. Each weight becomes
    dequantize_absmax(*quantize_absmax(w, bits, group_size)): what a kernel that reads the
    quantized format would compute with (simulated, or "fake", quantization). It measures
    accuracy only: the copy still stores float32. Shared weights (a tied lm_head) stay as
    they are, as in `quantize_int8`. A layer whose input width group_size does not divide
    raises ValueError.
    """

    def rounded(linear: nn.Linear) -> nn.Linear:
        with torch.no_grad():
            weight = dequantize_absmax(*quantize_absmax(linear.weight, bits, group_size))
            linear.weight.copy_(weight.to(linear.weight.dtype))
        return linear

    return _replace_linears(model, rounded, "fake_quantize_weights")


def int8_matmul(
    x: torch.Tensor, weight: torch.Tensor, outlier_threshold: float | None = None
) -> torch.Tensor:
    """x @ weight.T computed in int8 as LLM.int8() does; returns float32 (..., out).

    Taught in notebooks/14_inference.ipynb. x (..., in) holds activations, weight (out, in) a
    linear layer's weight. Vector-wise quantization (Dettmers et al. 2022, §3.1): every row of
    x (one token) and every row of weight (one output channel) is rounded to int8 with its own
    absmax scale; the integer products are summed exactly and scaled back by the outer product
    of the two scale vectors. With outlier_threshold (LLM.int8 uses 6.0, §3.2), every input
    feature (column of x) holding a value of magnitude >= the threshold is taken out and
    multiplied in 16-bit (x and the weight's matching columns in float16), and only the rest
    goes through int8 (mixed-precision decomposition, Eq. 8); the other features' scales no
    longer depend on the outliers. Raises ValueError for shapes that do not match or a
    threshold that is not a positive number.
    """
    if weight.dim() != 2 or x.size(-1) != weight.size(1):
        raise ValueError(
            f"x (..., in) and weight (out, in) must share `in`; got x {tuple(x.shape)} and "
            f"weight {tuple(weight.shape)}"
        )
    if outlier_threshold is not None and (
        isinstance(outlier_threshold, bool)
        or not isinstance(outlier_threshold, numbers.Real)
        or not outlier_threshold > 0
    ):
        raise ValueError(
            f"outlier_threshold must be a positive number or None, got {outlier_threshold!r}"
        )
    flat = x.detach().float().reshape(-1, x.size(-1))
    weight = weight.detach().float()
    outliers = torch.zeros(flat.size(1), dtype=torch.bool, device=flat.device)
    if outlier_threshold is not None:
        outliers = (flat.abs() >= outlier_threshold).any(dim=0)
    regular = flat.masked_fill(outliers, 0.0)
    q_x, s_x = quantize_absmax(regular, bits=8)
    q_w, s_w = quantize_absmax(weight.masked_fill(outliers, 0.0), bits=8)
    # int8 x int8 products summed in float64 are exact (as an int32 accumulator would be).
    y = (q_x.double() @ q_w.double().T).float() * s_x * s_w.T
    if bool(outliers.any()):
        y = y + flat[:, outliers].half().float() @ weight[:, outliers].half().float().T
    return y.reshape(*x.shape[:-1], weight.size(0))


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
