"""Positional information: learned and sinusoidal tables, rotary embeddings (with the
long-context scalings of their frequencies), ALiBi slopes.

Taught in notebooks/05_positional_encodings.ipynb; the rotary scalings in
notebooks/13_gpt4_era.ipynb.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sampling import check_integer, check_real


class Float32Buffers(nn.Module):
    """A module whose float32 buffers keep at least float32 precision when the model is cast.

    `model.to(torch.bfloat16)` (or `.half()`) converts buffers as well as parameters; rotary
    frequencies and ALiBi slopes rounded to 8 significant bits would give wrong angles and
    biases at long positions (bfloat16 cannot even tell 1000 from 1002). Here a cast to a
    16-bit float leaves them float32, a cast to float64 converts them, and a device move moves
    them. Taught in notebooks/05_positional_encodings.ipynb.
    """

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN201 (torch's signature)
        kept = {
            name: buffer
            for name, buffer in self._buffers.items()
            if buffer is not None and buffer.dtype == torch.float32
        }
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after is not None and after.is_floating_point() and after.element_size() < 4:
                self._buffers[name] = before.to(after.device)
        return self


class LearnedPositions(nn.Module):
    """A trained vector per position, added to the token embedding (GPT-1, GPT-2, GPT-3)."""

    def __init__(self, block_size: int, n_embd: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(block_size, n_embd))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.weight[positions]


def sinusoidal_table(positions: torch.Tensor, n_embd: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sin/cos table of Vaswani et al. 2017: row p is the encoding of position p.

    Even columns hold sin(p / base^(2i/d)), odd columns cos of the same angle. positions is
    a 1-D tensor, n_embd a positive integer and base a finite number > 1; anything else raises
    TypeError or ValueError naming it (base 0 gave a table of NaN and inf).
    """
    if not isinstance(positions, torch.Tensor) or positions.dim() != 1:
        got = (
            tuple(positions.shape)
            if isinstance(positions, torch.Tensor)
            else type(positions).__name__
        )
        raise TypeError(f"positions must be a 1-D tensor such as torch.arange(T), got {got}")
    n_embd = check_integer("n_embd", n_embd, 1, "a positive integer")
    if not check_real("base", base, "a finite number > 1 (usually 10000)") > 1:
        raise ValueError(f"base must be a finite number > 1 (usually 10000), got {base}")
    inv_freq = base ** (-torch.arange(0, n_embd, 2, dtype=torch.float32) / n_embd)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    table = torch.zeros(len(positions), n_embd, device=positions.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : n_embd // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings, computed for any position (no table size limit).

    The table is computed in float32; `GPT.forward` casts it to the model's dtype as it adds
    it, so a bfloat16 or float16 model gets angles computed at full precision.
    """

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.n_embd = n_embd

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return sinusoidal_table(positions, self.n_embd)


ROTARY_SCALINGS = ("none", "linear", "ntk")


def rotary_frequencies(
    rotary_dim: int, base: float = 10000.0, scaling: str = "none", factor: float = 1.0
) -> torch.Tensor:
    """The angle per position θ_i of each rotated pair i: shape (rotary_dim // 2,), float32.

    "none": θ_i = base^(-2i/rotary_dim) (Su et al. 2021). The two scalings let a model
    trained at context L read factor·L positions:
    - "linear", position interpolation (Chen et al. 2023, §2): every θ_i divided by factor,
      so position m turns as far as position m/factor did in training; this is transformers'
      rope_type "linear".
    - "ntk", NTK-aware scaling (Peng et al. 2023, §3): the base becomes
      base·factor^(rotary_dim/(rotary_dim-2)), which leaves the fastest pair as it was and
      divides the slowest by exactly factor. (transformers' "dynamic" type recomputes this
      base from the current length; gptlib keeps it fixed.)
    Taught in notebooks/13_gpt4_era.ipynb. Raises ValueError for an odd rotary_dim, an
    unknown scaling, a factor below 1, or "ntk" with rotary_dim 2 (its exponent divides by 0).
    """
    if rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even and >= 2, got {rotary_dim}")
    if scaling not in ROTARY_SCALINGS:
        raise ValueError(f"scaling={scaling!r} is unknown; use one of {ROTARY_SCALINGS}")
    if not factor >= 1:
        raise ValueError(f"factor={factor!r} must be >= 1 (the longer context / the trained one)")
    if scaling == "ntk":
        if rotary_dim < 4:
            raise ValueError("NTK-aware scaling needs rotary_dim >= 4")
        base = base * factor ** (rotary_dim / (rotary_dim - 2))
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
    return inv_freq / factor if scaling == "linear" else inv_freq


class Rotary(Float32Buffers):
    """Rotary position embedding (RoPE, Su et al. 2021) on the first `rotary_dim` dims of a head.

    Each pair of dimensions is rotated by the angle position·θ_i with θ_i = base^(-2i/rotary_dim),
    so the dot product of a rotated query and key depends only on their offset.
    `scaling` and `factor` stretch the frequencies for a context longer than the one trained on
    (see `rotary_frequencies`). `pairing="interleaved"` rotates adjacent dims (2i, 2i+1) as
    GPT-J and Meta's original LLaMA code do; `pairing="half"` rotates dim i with dim
    i + rotary_dim/2 as GPT-NeoX and the Hugging Face port of LLaMA do (the port's conversion
    script permutes the q/k rows to match). The two are the same rotation up to a permutation of
    the dimensions. The frequencies and angles stay float32 in a
    bfloat16 or float16 model (see `Float32Buffers`); the rotated q and k return in their dtype.
    """

    def __init__(
        self,
        rotary_dim: int,
        base: float = 10000.0,
        pairing: str = "half",
        scaling: str = "none",
        factor: float = 1.0,
    ) -> None:
        super().__init__()
        if pairing not in ("half", "interleaved"):
            raise ValueError(
                f"pairing={pairing!r} is unknown; use 'half' (GPT-NeoX, HF LLaMA) "
                "or 'interleaved' (GPT-J, Meta's LLaMA)"
            )
        self.rotary_dim = rotary_dim
        self.pairing = pairing
        inv_freq = rotary_frequencies(rotary_dim, base, scaling, factor)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every angle, laid out to match the pairing: shape (T, rotary_dim)."""
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        if self.pairing == "interleaved":
            angles = angles.repeat_interleave(2, dim=-1)
        else:
            angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate the first rotary_dim dims of x (..., T, head_dim); pass the rest through."""
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        if self.pairing == "interleaved":
            partner = torch.stack([-rot[..., 1::2], rot[..., 0::2]], dim=-1).flatten(-2)
        else:
            first, second = rot.chunk(2, dim=-1)
            partner = torch.cat([-second, first], dim=-1)
        rotated = (rot.to(cos.dtype) * cos + partner.to(cos.dtype) * sin).to(x.dtype)
        return torch.cat([rotated, rest], dim=-1)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin(positions)
        return self.rotate(q, cos, sin), self.rotate(k, cos, sin)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): 2^(-8/n), 2^(-16/n), ... for n heads.

    For a head count that is not a power of two, take the slopes of the largest power of two
    below it, then every other slope of twice that power. Raises TypeError or ValueError for an
    n_head that is not a positive integer.
    """
    n_head = check_integer("n_head", n_head, 1, "a positive integer")

    def powers(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(powers(n_head))
    below = 2 ** math.floor(math.log2(n_head))
    return torch.tensor(powers(below) + powers(2 * below)[0::2][: n_head - below])


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """The additive score bias -slope·(i - j) for query position i and key j: (H, Tq, Tk).

    slopes (H,) is a float tensor (`alibi_slopes`), q_pos (Tq,) and k_pos (Tk,) tensors of
    positions; anything that is no tensor raises TypeError.
    """
    for name, value in (("slopes", slopes), ("q_pos", q_pos), ("k_pos", k_pos)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor, got {type(value).__name__}; slopes come from "
                "alibi_slopes(n_head), positions from torch.arange(T)"
            )
    distance = (q_pos[:, None] - k_pos[None, :]).to(slopes.dtype)
    return -slopes[:, None, None] * distance
