"""The transformer block's parts: LayerNorm / RMSNorm, the feed-forward network (GELU, ReLU,
SwiGLU, mixture of experts), and `Block`, which wires them post-LN, pre-LN or in parallel.

Taught in notebooks/06_transformer_block.ipynb.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CausalSelfAttention, LayerCache
from .config import GPTConfig
from .sampling import check_integer, check_real


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · g: LayerNorm without centring and without a bias.

    dim is a positive integer and eps a finite number > 0; TypeError or ValueError name others.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        dim = check_integer("dim", dim, 1, "a positive integer (the width normalised)")
        if not check_real("eps", eps, "a finite number > 0 (such as 1e-6)") > 0:
            raise ValueError(f"eps must be a finite number > 0 (such as 1e-6), got {eps}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


NORMS = {
    "layernorm": lambda dim, eps: nn.LayerNorm(dim, eps=eps),
    "rmsnorm": lambda dim, eps: RMSNorm(dim, eps=eps),
}

ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),  # exact, with erf (transformers' GPT-NeoX default)
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GPT-1's and GPT-2's tanh approximation
    "relu": lambda: nn.ReLU(),  # the original Transformer
    "silu": lambda: nn.SiLU(),  # inside SwiGLU
}


def make_norm(config: GPTConfig) -> nn.Module:
    """The norm layer the config asks for."""
    return NORMS[config.norm](config.n_embd, config.norm_eps)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(d, d_ff) -> activation -> Linear(d_ff, d)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, config.d_ff, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.activation]()
        self.fc_out = nn.Linear(config.d_ff, config.n_embd, bias=config.mlp_bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc_out(self.act(self.fc_in(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward network (Shazeer 2020): down(act(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.d_ff, bias=config.mlp_bias)
        self.up = nn.Linear(config.n_embd, config.d_ff, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.activation]()
        self.fc_out = nn.Linear(config.d_ff, config.n_embd, bias=config.mlp_bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc_out(self.act(self.gate(x)) * self.up(x)))


class MixtureOfExperts(nn.Module):
    """n_experts SwiGLU networks; a linear router sends each token to its top-k experts.

    The k chosen experts' outputs are mixed with the softmax of their router logits
    (Mixtral's top-2 gating). `last_router_logits` keeps the router's output for an
    auxiliary load-balancing loss.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.top_k = config.n_experts_per_token
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(config) for _ in range(config.n_experts))
        self.last_router_logits: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        # The kept logits belong to an autograd graph, which copy.deepcopy and pickle refuse;
        # a copy of the layer starts without them, as a new layer does.
        return {**self.__dict__, "last_router_logits": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        tokens = x.reshape(-1, C)
        logits = self.router(tokens)  # (N, n_experts)
        self.last_router_logits = logits
        top_logits, chosen = logits.topk(self.top_k, dim=-1)  # (N, k)
        gates = torch.softmax(top_logits.float(), dim=-1).to(x.dtype)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(chosen == e)
            if token_idx.numel():
                contribution = expert(tokens[token_idx]) * gates[token_idx, slot, None]
                out.index_add_(0, token_idx, contribution)
        return out.view(B, T, C)


FEED_FORWARDS = {"mlp": MLP, "swiglu": SwiGLU, "moe": MixtureOfExperts}


class Block(nn.Module):
    """One transformer layer: attention and feed-forward, each with a residual connection.

    norm_placement="post" (GPT-1, the original Transformer): x = norm(x + attn(x)); then
    x = norm(x + mlp(x)). "pre" (GPT-2, GPT-3, GPT-Neo, Llama): x = x + attn(norm(x)); then
    x = x + mlp(norm(x)). "parallel" (GPT-J, GPT-NeoX): x = x + attn(norm1(x)) + mlp(norm2(x)),
    with norm2 = norm1 when shared_norm (GPT-J).
    """

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = None if config.shared_norm else make_norm(config)  # GPT-J: ln_1 feeds both
        self.mlp = FEED_FORWARDS[config.mlp](config)
        self.resid_dropout = nn.Dropout(config.dropout)
        self._residual = {
            "post": self._post_ln,
            "pre": self._pre_ln,
            "parallel": self._parallel,
        }[config.norm_placement]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        def attend(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            y, weights = self.attn(h, positions, cache, return_attention)
            return self.resid_dropout(y), weights

        return self._residual(x, attend)

    def _post_ln(self, x, attend):
        a, weights = attend(x)
        x = self.ln_1(x + a)
        return self.ln_2(x + self.mlp(x)), weights

    def _pre_ln(self, x, attend):
        a, weights = attend(self.ln_1(x))
        x = x + a
        return x + self.mlp(self.ln_2(x)), weights

    def _parallel(self, x, attend):
        h = self.ln_1(x)
        a, weights = attend(h)
        return x + a + self.mlp(h if self.ln_2 is None else self.ln_2(x)), weights
