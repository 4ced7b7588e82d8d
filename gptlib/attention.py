"""Causal self-attention: multi-head, multi-query and grouped-query; dense, local-window and
strided-sparse layouts; rotary or ALiBi positions; a key/value cache for generation.

Taught in notebooks/04_attention.ipynb (the mechanism, MQA/GQA, the cache) and
notebooks/05_positional_encodings.ipynb (rotary, ALiBi); the layouts are drawn in
notebooks/15_attention_maps.ipynb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .positional import Float32Buffers, Rotary, alibi_bias, alibi_slopes


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
    """
    distance = q_pos[:, None] - k_pos[None, :]
    causal = distance >= 0
    if layout == "dense":
        return causal
    if layout == "local":
        return causal & (distance < window_size)
    if layout == "strided":
        return causal & ((distance < sparse_stride) | (distance % sparse_stride == 0))
    raise ValueError(f"unknown attention layout {layout!r}; use 'dense', 'local' or 'strided'")


@dataclass
class LayerCache:
    """Keys and values of one layer for the tokens seen so far, with their positions."""

    k: torch.Tensor | None = None  # (B, n_kv_head, T_cached, head_dim)
    v: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # (T_cached,)

    def append(
        self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, keep_last: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)
            v = torch.cat([self.v, v], dim=2)
            positions = torch.cat([self.positions, positions])
        self.k, self.v, self.positions = k, v, positions
        if keep_last is not None and self.k.size(2) > keep_last:
            # A local window never looks further back than this, so the cache stays bounded.
            self.k, self.v = self.k[:, :, -keep_last:], self.v[:, :, -keep_last:]
            self.positions = self.positions[-keep_last:]
        return k, v, positions


@dataclass
class KVCache:
    """The per-layer caches of a model, and how many tokens have passed through it."""

    n_layer: int
    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0

    def __post_init__(self) -> None:
        self.layers = [LayerCache() for _ in range(self.n_layer)]

    def num_cached(self) -> int:
        """Key/value vectors held (summed over layers), per sequence and head."""
        return sum(0 if c.k is None else c.k.size(2) for c in self.layers)


def kv_cache_bytes(config: GPTConfig, n_tokens: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes a KV cache holds for n_tokens: a key and a value per layer, KV head and token.

    Taught in notebooks/04_attention.ipynb. bytes_per_value=2 is 16-bit numbers. A local
    window caps n_tokens at window_size in those layers; this counts every layer as dense.
    """
    return 2 * config.n_layer * config.n_kv_head * config.head_dim * n_tokens * bytes_per_value


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
            Rotary(config.rotary_dim, config.rotary_base, config.rotary_pairing)
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
        """Attend over x (B, T, C) at `positions` (T,); returns (output, weights or None)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [
                self.n_head * self.head_dim,
                self.n_kv_head * self.head_dim,
                self.n_kv_head * self.head_dim,
            ],
            dim=-1,
        )
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, H_kv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.rotary is not None:
            q, k = self.rotary(q, k, positions)
        k_pos = positions
        if cache is not None:
            keep = self.window_size if self.layout == "local" else None
            k, v, k_pos = cache.append(k, v, positions, keep_last=keep)
        if self.n_kv_head != self.n_head:  # each kv head serves a group of query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

        # Plain causal attention needs no mask tensor: without cached keys SDPA's is_causal
        # masks the future, and one new token may attend to every cached key.
        simple_causal = self.layout == "dense" and self.alibi_slopes is None
        simple_causal = simple_causal and (k.size(2) == T or T == 1)
        bias = None
        if not simple_causal:
            allowed = attention_mask(
                self.layout, positions, k_pos, self.window_size, self.sparse_stride
            )
            bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(~allowed, float("-inf"))
            if self.alibi_slopes is not None:
                bias = bias + alibi_bias(self.alibi_slopes, positions, k_pos).to(q.dtype)
        dropout = self.dropout if self.training else 0.0

        if return_attention:
            y, weights = explicit_attention(q, k, v, self.scale, bias, dropout)
        else:
            weights = None
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=bias,
                dropout_p=dropout,
                is_causal=bias is None and T > 1,
                scale=self.scale,
            )
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.out_proj(y), weights


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
