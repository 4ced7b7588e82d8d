"""Causal self-attention: multi-head, multi-query and grouped-query; dense, local-window and
strided-sparse layouts; rotary or ALiBi positions; attending through a key/value cache
(`KVCache`, kept in gptlib/kv_cache.py and importable from here).

Taught in notebooks/04_attention.ipynb (the mechanism, MQA/GQA, the cache) and
notebooks/05_positional_encodings.ipynb (rotary, ALiBi); the layouts are drawn in
notebooks/15_attention_maps.ipynb.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .kv_cache import KVCache, LayerCache, kv_cache_bytes, left_padding
from .positional import Float32Buffers, Rotary, alibi_bias, alibi_slopes
from .sampling import check_integer

__all__ = [
    "CausalSelfAttention",
    "KVCache",
    "LayerCache",
    "attention_mask",
    "explicit_attention",
    "kv_cache_bytes",
    "left_padding",
]


def attention_mask(
    layout: str,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    window_size: int | None = None,
    sparse_stride: int | None = None,
) -> torch.Tensor:
    """Boolean (Tq, Tk) mask, True where query position i may attend to key position j.

    "dense": every j <= i. "local": the window_size most recent positions, i - window < j <= i
    (GPT-Neo's local layers, Mistral's sliding window). "strided": a local band of width
    sparse_stride plus every key whose distance is a multiple of sparse_stride (the
    Sparse Transformer's strided pattern, our reconstruction of GPT-3's sparse layers).
    Raises TypeError or ValueError for a window_size or sparse_stride that the layout needs
    and that is not a positive integer (a window of 0 masked every key, so every row was NaN).
    """
    if layout == "local":
        window_size = check_integer("window_size", window_size, 1, "a positive integer")
    elif layout == "strided":
        sparse_stride = check_integer("sparse_stride", sparse_stride, 1, "a positive integer")
    distance = q_pos[:, None] - k_pos[None, :]
    causal = distance >= 0
    if layout == "dense":
        return causal
    if layout == "local":
        return causal & (distance < window_size)
    if layout == "strided":
        return causal & ((distance < sparse_stride) | (distance % sparse_stride == 0))
    raise ValueError(f"unknown attention layout {layout!r}; use 'dense', 'local' or 'strided'")


class CausalSelfAttention(Float32Buffers):
    """Masked self-attention in which n_head query heads share n_kv_head key/value heads.

    n_kv_head == n_head is classic multi-head attention, 1 is multi-query attention (MQA),
    anything in between grouped-query attention (GQA). The projections of q, k and v are one
    fused linear layer; its output is [all q heads | all k heads | all v heads]. In a bfloat16
    or float16 model the ALiBi slopes stay float32 (see `Float32Buffers`) and the softmax is
    computed in float32 (explicitly on the return_attention path; SDPA accumulates it in
    float32 too).
    """

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = (
            config.n_head,
            config.n_kv_head,
            config.head_dim,
        )
        self.qkv = nn.Linear(
            config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.qkv_bias
        )
        self.out_proj = nn.Linear(
            self.n_head * self.head_dim, config.n_embd, bias=config.attn_out_bias
        )
        self.layout = config.layer_layout(layer)
        self.window_size, self.sparse_stride = config.window_size, config.sparse_stride
        self.scale = 1.0 / math.sqrt(self.head_dim) if config.attention_scale else 1.0
        self.dropout = config.dropout
        self.rotary = (
            Rotary(
                config.rotary_dim,
                config.rotary_base,
                config.rotary_pairing,
                config.rotary_scaling,
                config.rotary_scaling_factor,
            )
            if config.position == "rotary"
            else None
        )
        slopes = alibi_slopes(self.n_head) if config.position == "alibi" else None
        self.register_buffer("alibi_slopes", slopes, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over x (B, T, C); returns (output (B, T, C), weights or None).

        positions (T,) are shared by every row; (B, T) gives each row its own, as in a
        left-padded batch, where padding has negative positions and is never attended to.
        cache holds the keys and values of earlier tokens and receives the new ones.
        """
        B, T, _ = x.shape
        # [all q heads | all k heads | all v heads], each head_dim wide: (B, heads, T, hd)
        q, k, v = (
            self.qkv(x)
            .view(B, T, self.n_head + 2 * self.n_kv_head, self.head_dim)
            .transpose(1, 2)
            .split([self.n_head, self.n_kv_head, self.n_kv_head], dim=1)
        )
        if self.rotary is not None:
            q, k = self._rotate(q, k, positions)
        if cache is None:
            keys, values = k, v
        else:
            window = self.window_size if self.layout == "local" else None
            keys, values = cache.update(k, v, window, in_order=return_attention)
        bias = self._bias(positions, cache, T, keys.size(2), q.dtype)
        dropout = self.dropout if self.training else 0.0

        if return_attention:
            if self.n_kv_head != self.n_head:  # each kv head serves a group of query heads
                keys = keys.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
                values = values.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            y, weights = explicit_attention(q, keys, values, self.scale, bias, dropout)
        else:
            weights = None
            y = F.scaled_dot_product_attention(
                q,
                keys,
                values,
                attn_mask=bias,
                dropout_p=dropout,
                is_causal=bias is None and T > 1,
                scale=self.scale,
                enable_gqa=self.n_kv_head != self.n_head,  # no copies of the shared heads
            )
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.out_proj(y), weights

    def _rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() == 1:
            return self.rotary(q, k, positions)
        B, T = positions.shape  # one angle per row and token: cos, sin (B, 1, T, rotary_dim)
        cos, sin = (c.view(B, 1, T, -1) for c in self.rotary.cos_sin(positions.reshape(-1)))
        return self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)

    def _bias(
        self,
        positions: torch.Tensor,
        cache: LayerCache | None,
        T: int,
        n_keys: int,
        dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """Additive score bias (.., T, n_keys), or None when plain causal attention is right.

        None needs no tensor at all: without cached keys SDPA's is_causal masks the future, one
        new token may see every key a dense layer holds, and a local layer's rolling buffer
        holds only keys inside the window. Padding keys of a left-padded batch get -inf.
        """
        padded = positions.dim() == 2
        if self.alibi_slopes is None:
            one_step = T == 1 and cache is not None
            if not padded and (
                (self.layout == "dense" and (one_step or n_keys == T))
                or (self.layout == "local" and one_step and n_keys <= self.window_size)
                or n_keys == T == 1
            ):
                return None
            if padded and self.layout == "dense" and one_step:
                return cache.padding_bias(dtype)
        k_pos = positions if cache is None else cache.key_positions()
        # Masks and ALiBi depend on distances only, which are the same in every row.
        q_row, k_row = (positions[0], k_pos[0]) if padded else (positions, k_pos)
        allowed = attention_mask(self.layout, q_row, k_row, self.window_size, self.sparse_stride)
        if padded:
            # Padding keys are hidden; a padding query sees itself, so its softmax stays finite.
            itself = q_row[:, None] == k_row[None, :]
            allowed = ((allowed & (k_pos >= 0)[:, None, :]) | itself)[:, None]  # (B, 1, T, n)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=positions.device)
        bias = bias.masked_fill(~allowed, float("-inf"))
        if self.alibi_slopes is not None:
            bias = bias + alibi_bias(self.alibi_slopes, q_row, k_row).to(dtype)
        return bias


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ·scale + bias)·v written out, returning the weights too.

    bias=None means plain causal masking (query i sees keys j <= i). Same result as
    F.scaled_dot_product_attention up to float rounding.
    """
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if bias is None:
        Tq, Tk = scores.shape[-2:]
        causal = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        scores = scores.masked_fill(~causal, float("-inf"))
    else:
        scores = scores + bias
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    dropped = F.dropout(weights, p=dropout) if dropout > 0 else weights
    return dropped @ v, weights
