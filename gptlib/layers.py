"""The transformer block's parts: LayerNorm / RMSNorm, the feed-forward network (GELU, ReLU,
SwiGLU, mixture of experts), and `Block`, which wires them post-LN, pre-LN or in parallel.

Taught in notebooks/06_transformer_block.ipynb; the mixture of experts' capacity limit and
load-balancing loss in notebooks/13_gpt4_era.ipynb.
"""

from __future__ import annotations

import math

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
    (Mixtral's top-2 gating, Jiang et al. 2024). With config.capacity_factor set, training
    gives each expert room for at most `expert_capacity` assignments per batch and drops the
    rest (Fedus et al. 2021, §2.2): first choices are served before second choices, each in
    token order, and a dropped assignment adds nothing (the token's residual stream carries
    it past the layer). Evaluation and generation drop nothing. After each forward pass,
    `last_router_logits` (n_tokens, n_experts) holds the router's output for the
    load-balancing loss and `last_dropped` the number of assignments dropped. Taught in
    notebooks/13_gpt4_era.ipynb.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.top_k = config.n_experts_per_token
        self.capacity_factor = config.capacity_factor
        self.router = nn.Linear(config.n_embd, config.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(config) for _ in range(config.n_experts))
        self.last_router_logits: torch.Tensor | None = None
        self.last_dropped = 0

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
        kept = torch.ones_like(chosen, dtype=torch.bool)
        if self.training and self.capacity_factor is not None:
            capacity = expert_capacity(len(tokens), len(self.experts), self.top_k,
                                       self.capacity_factor)  # fmt: skip
            # Each assignment's place in its expert's queue: first choices of every token
            # first, then second choices, each in token order.
            queue = nn.functional.one_hot(chosen.T.reshape(-1), len(self.experts)).cumsum(0)
            place = queue.gather(1, chosen.T.reshape(-1, 1)).view(self.top_k, -1).T
            kept = place <= capacity
        self.last_dropped = int((~kept).sum())
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where((chosen == e) & kept)
            if token_idx.numel():
                contribution = expert(tokens[token_idx]) * gates[token_idx, slot, None]
                out.index_add_(0, token_idx, contribution)
        return out.view(B, T, C)


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Assignments one expert may take from a batch: ceil(capacity_factor · n_tokens · k / E).

    Fedus et al. 2021, §2.2 (Eq. 3, top-1): expert capacity = tokens per batch / number of
    experts × capacity factor; with top-k routing each token makes k assignments. Factor 1
    leaves no slack: any imbalance drops assignments. Taught in notebooks/13_gpt4_era.ipynb.
    """
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


def expert_load(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """The share of all top-k assignments that goes to each expert: (n_experts,), sums to 1.

    router_logits is (n_tokens, n_experts), as `MixtureOfExperts.last_router_logits`.
    Counted before any capacity limit. Taught in notebooks/13_gpt4_era.ipynb.
    """
    chosen = router_logits.topk(top_k, dim=-1).indices
    counts = torch.bincount(chosen.flatten(), minlength=router_logits.size(-1))
    return counts.float() / counts.sum()


def load_balancing_loss(router_logits: torch.Tensor, top_k: int = 1) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss N · Σᵢ fᵢ·Pᵢ, a scalar between 1 and N.

    Fedus et al. 2021, §2.2 (Eq. 4, without its coefficient α): fᵢ is the share of the
    tokens' top-k assignments that go to expert i (`expert_load`; Switch routes top-1) and Pᵢ
    the router's softmax probability for expert i averaged over the tokens. fᵢ is a count
    and carries no gradient; through Pᵢ the loss pushes probability away from the busiest
    experts. It is 1 when routing is uniform and approaches N when every token goes to
    one expert. router_logits: (n_tokens, n_experts). Taught in notebooks/13_gpt4_era.ipynb.
    """
    n_experts = router_logits.size(-1)
    probabilities = torch.softmax(router_logits.float(), dim=-1).mean(dim=0)
    return n_experts * (expert_load(router_logits, top_k) * probabilities).sum()


def router_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The mean `load_balancing_loss` of every MixtureOfExperts in model, from its last forward
    pass; None when the model has none (or none has run). `GPT.forward` adds it, times
    config.router_aux_loss_coef, to the training loss. Taught in notebooks/13_gpt4_era.ipynb.
    """
    losses = [
        load_balancing_loss(layer.last_router_logits, layer.top_k)
        for layer in model.modules()
        if isinstance(layer, MixtureOfExperts) and layer.last_router_logits is not None
    ]
    return torch.stack(losses).mean() if losses else None


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
