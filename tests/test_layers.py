"""Tests for gptlib.layers: the norms, the feed-forward networks, mixture of experts and Block."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptlib import GPT, GPTConfig
from gptlib.config import swiglu_hidden
from gptlib.layers import (
    ACTIVATIONS,
    MLP,
    NORMS,
    Block,
    MixtureOfExperts,
    RMSNorm,
    SwiGLU,
    expert_capacity,
    expert_load,
    load_balancing_loss,
    make_norm,
    router_aux_loss,
)


def small_config(**overrides) -> GPTConfig:
    settings = dict(
        vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32, position="none", dropout=0.0
    )
    settings.update(overrides)
    return GPTConfig(**settings)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise(module: nn.Module) -> nn.Module:
    """Give every parameter (norm gains and biases too) a random value, so no term hides."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return module.eval()


# ---------------------------------------------------------------------- norms
def test_rmsnorm_computes_its_formula() -> None:
    norm = randomise(RMSNorm(16, eps=1e-6))
    x = torch.randn(3, 5, 16) * 4 + 2
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_gives_unit_root_mean_square_and_ignores_scale() -> None:
    norm = RMSNorm(16)
    x = torch.randn(4, 16) * 3 + 1
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm(10 * x), norm(x), atol=1e-5, rtol=1e-5)


def test_rmsnorm_does_not_centre_but_layernorm_does() -> None:
    x = torch.randn(4, 16) + 5.0  # a large shared offset
    layer_norm, rms_norm = nn.LayerNorm(16, elementwise_affine=False), RMSNorm(16)
    torch.testing.assert_close(layer_norm(x).mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    assert (rms_norm(x).mean(-1) > 0.9).all()  # the offset survives RMSNorm


def test_rmsnorm_equals_layernorm_on_centred_inputs() -> None:
    x = torch.randn(4, 16)
    x = x - x.mean(-1, keepdim=True)
    layer_norm = nn.LayerNorm(16, eps=1e-6, elementwise_affine=False)
    torch.testing.assert_close(RMSNorm(16, eps=1e-6)(x), layer_norm(x), atol=1e-5, rtol=1e-5)


def test_rmsnorm_in_bfloat16_computes_the_statistic_in_float32() -> None:
    x = torch.randn(2, 8) * 100
    norm = RMSNorm(8).to(torch.bfloat16)
    y = norm(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), RMSNorm(8)(x), atol=2e-2, rtol=1e-2)


def test_rmsnorm_has_a_gain_and_no_bias_layernorm_has_both() -> None:
    assert n_params(RMSNorm(16)) == 16
    assert n_params(nn.LayerNorm(16)) == 32


@pytest.mark.parametrize(("name", "kind"), [("layernorm", nn.LayerNorm), ("rmsnorm", RMSNorm)])
def test_make_norm_picks_the_configured_norm_and_epsilon(name: str, kind: type) -> None:
    norm = make_norm(small_config(norm=name, norm_eps=1e-3))
    assert isinstance(norm, kind)
    assert norm.eps == 1e-3
    assert set(NORMS) == {"layernorm", "rmsnorm"}


# ---------------------------------------------------------------------- activations and MLPs
def test_activation_table_matches_the_formulas() -> None:
    x = torch.linspace(-4, 4, 81)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(ACTIVATIONS["gelu"]()(x), exact)
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"]()(x), tanh)
    torch.testing.assert_close(ACTIVATIONS["relu"]()(x), x.clamp(min=0))
    torch.testing.assert_close(ACTIVATIONS["silu"]()(x), x * torch.sigmoid(x))
    # The tanh form approximates the exact GELU closely, but it is not the same function.
    gap = (ACTIVATIONS["gelu"]()(x) - ACTIVATIONS["gelu_tanh"]()(x)).abs().max()
    assert 0 < gap < 1e-3


def test_mlp_shapes_parameters_and_formula() -> None:
    config = small_config(activation="relu", d_ff=48)
    mlp = randomise(MLP(config))
    d, h = config.n_embd, 48
    assert n_params(mlp) == d * h + h + h * d + d
    x = torch.randn(2, 5, d)
    expected = mlp.fc_out(torch.relu(mlp.fc_in(x)))
    assert mlp(x).shape == (2, 5, d)
    torch.testing.assert_close(mlp(x), expected)


def test_swiglu_shapes_parameters_and_formula() -> None:
    config = small_config(mlp="swiglu", activation="silu", d_ff=40, mlp_bias=False)
    ffn = randomise(SwiGLU(config))
    d = config.n_embd
    assert n_params(ffn) == 3 * d * 40
    assert ffn.gate.weight.shape == ffn.up.weight.shape == (40, d)
    assert ffn.fc_out.weight.shape == (d, 40)
    x = torch.randn(2, 5, d)
    expected = ffn.fc_out(F.silu(ffn.gate(x)) * ffn.up(x))
    assert ffn(x).shape == (2, 5, d)
    torch.testing.assert_close(ffn(x), expected)


def test_swiglu_at_two_thirds_width_matches_the_mlp_parameter_budget() -> None:
    # LLaMA §2.2: "2/3 4d instead of 4d" keeps three matrices near the 8d² of a 4d MLP.
    assert swiglu_hidden(4096) == 11008
    d = 768
    mlp = MLP(small_config(n_embd=d, n_head=12, mlp_bias=False))
    swiglu = SwiGLU(small_config(n_embd=d, n_head=12, d_ff=2 * 4 * d // 3, mlp_bias=False))
    assert n_params(mlp) == n_params(swiglu) == 8 * d * d


# ---------------------------------------------------------------------- mixture of experts
def moe_config(**overrides) -> GPTConfig:
    settings = dict(mlp="moe", n_experts=4, n_experts_per_token=2, activation="silu", d_ff=24)
    settings.update(overrides)
    return small_config(**settings)


def dense_moe_reference(moe: MixtureOfExperts, x: torch.Tensor) -> torch.Tensor:
    """Every token, one at a time: softmax over its top-k router logits, mix those experts."""
    out = torch.zeros_like(x)
    for b in range(x.size(0)):
        for t in range(x.size(1)):
            token = x[b, t]
            logits = token @ moe.router.weight.T
            top = sorted(range(len(logits)), key=lambda e: -logits[e].item())[: moe.top_k]
            gates = torch.softmax(logits[top], dim=0)
            for gate, e in zip(gates, top, strict=True):
                out[b, t] += gate * moe.experts[e](token[None])[0]
    return out


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_moe_equals_a_token_by_token_reference(top_k: int) -> None:
    moe = randomise(MixtureOfExperts(moe_config(n_experts_per_token=top_k)))
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(moe(x), dense_moe_reference(moe, x), atol=1e-5, rtol=1e-4)


def test_moe_routes_each_token_to_its_top_k_experts_with_gates_summing_to_one() -> None:
    moe = randomise(MixtureOfExperts(moe_config()))
    x = torch.randn(3, 5, 32)
    before = moe(x)
    logits = moe.last_router_logits
    assert logits.shape == (15, 4)
    chosen = logits.topk(2, dim=-1).indices
    # Silence one expert at a time: a token's output changes iff that expert was among its top 2.
    for e in range(4):
        silenced = MixtureOfExperts(moe_config())
        silenced.load_state_dict(moe.state_dict())
        with torch.no_grad():
            silenced.experts[e].fc_out.weight.zero_()
            silenced.experts[e].fc_out.bias.zero_()
        changed = (silenced(x) - before).abs().sum(-1) > 0
        assert torch.equal(changed.reshape(-1), (chosen == e).any(-1))
    # Equal experts: the mixture is the expert itself, so the k gates must sum to one.
    for expert in moe.experts[1:]:
        expert.load_state_dict(moe.experts[0].state_dict())
    torch.testing.assert_close(moe(x), moe.experts[0](x), atol=1e-5, rtol=1e-4)


def test_moe_with_every_expert_chosen_is_the_softmax_mixture_of_all() -> None:
    moe = randomise(MixtureOfExperts(moe_config(n_experts_per_token=4)))
    x = torch.randn(2, 3, 32)
    gates = torch.softmax(moe.router(x), dim=-1)
    expected = sum(gates[..., e, None] * moe.experts[e](x) for e in range(4))
    torch.testing.assert_close(moe(x), expected, atol=1e-5, rtol=1e-4)


def test_moe_trains_its_router_and_only_the_chosen_experts() -> None:
    moe = randomise(MixtureOfExperts(moe_config(n_experts=8)))
    moe.train()
    x = torch.randn(1, 2, 32)  # 2 tokens x top-2: at most 4 of the 8 experts see any token
    moe(x).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    used = set(moe.last_router_logits.topk(2, dim=-1).indices.flatten().tolist())
    for e, expert in enumerate(moe.experts):
        assert (expert.gate.weight.grad is not None) == (e in used)


def test_moe_can_be_deep_copied_after_a_training_forward_pass() -> None:
    model = GPT(small_config(mlp="moe", n_experts=4, n_experts_per_token=2, activation="silu"))
    idx = torch.randint(64, (2, 8))
    model(idx, targets=idx)  # every MoE layer now holds router logits inside an autograd graph
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied(idx).logits, model(idx).logits)
    assert (
        copied.blocks[0].mlp.experts[0].gate.weight
        is not model.blocks[0].mlp.experts[0].gate.weight
    )


def test_moe_parameter_count_is_router_plus_experts() -> None:
    config = moe_config(mlp_bias=False)
    moe = MixtureOfExperts(config)
    assert n_params(moe) == 32 * 4 + 4 * 3 * 32 * 24


def test_expert_capacity_is_the_even_share_times_the_capacity_factor() -> None:
    # Fedus et al. 2021, Eq. 3: tokens per batch / experts x capacity factor (here x top-k).
    assert expert_capacity(512, 8, 1, 1.0) == 64
    assert expert_capacity(512, 8, 1, 1.25) == 80
    assert expert_capacity(512, 8, 2, 1.0) == 128
    assert expert_capacity(10, 4, 1, 1.0) == 3  # rounded up: 2.5 -> 3


def capacity_reference(chosen: torch.Tensor, capacity: int, n_experts: int) -> torch.Tensor:
    """Serve every token's first choice in token order, then every second choice, and so on."""
    kept = torch.zeros_like(chosen, dtype=torch.bool)
    taken = [0] * n_experts
    for slot in range(chosen.size(1)):
        for token in range(chosen.size(0)):
            e = int(chosen[token, slot])
            if taken[e] < capacity:
                taken[e] += 1
                kept[token, slot] = True
    return kept


@pytest.mark.parametrize("top_k, capacity_factor", [(1, 1.0), (2, 1.0), (2, 0.5), (1, 0.3)])
def test_capacity_drops_the_assignments_past_each_experts_capacity(top_k, capacity_factor) -> None:
    config = moe_config(n_experts_per_token=top_k, capacity_factor=capacity_factor)
    moe = randomise(MixtureOfExperts(config))
    with torch.no_grad():
        moe.router.weight[0] += 1.0  # a router that prefers expert 0, so something overflows
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(0))
    moe.train()
    with torch.no_grad():
        out = moe(x).reshape(-1, 32)
    chosen = moe.last_router_logits.topk(top_k, dim=-1).indices
    capacity = expert_capacity(18, 4, top_k, capacity_factor)
    kept = capacity_reference(chosen, capacity, 4)
    assert moe.last_dropped == int((~kept).sum()) > 0
    assert all(int(((chosen == e) & kept).sum()) <= capacity for e in range(4))
    # Each token's output: the gate-weighted sum of its kept experts (gates not renormalised).
    gates = torch.softmax(moe.last_router_logits.topk(top_k, dim=-1).values, dim=-1)
    tokens = x.reshape(-1, 32)
    with torch.no_grad():
        for t in range(18):
            expected = torch.zeros(32)  # a token with every assignment dropped gets zero
            for slot in range(top_k):
                if kept[t, slot]:
                    expected += gates[t, slot] * moe.experts[int(chosen[t, slot])](tokens[t])
            torch.testing.assert_close(out[t], expected, atol=1e-5, rtol=1e-4)
    # Evaluation drops nothing: the same layer in eval mode is the plain top-k mixture.
    moe.eval()
    torch.testing.assert_close(moe(x), dense_moe_reference(moe, x), atol=1e-5, rtol=1e-4)
    assert moe.last_dropped == 0


def test_a_generous_capacity_drops_nothing() -> None:
    moe = randomise(MixtureOfExperts(moe_config(capacity_factor=4.0))).train()
    x = torch.randn(2, 8, 32)
    with torch.no_grad():
        out = moe(x)
    assert moe.last_dropped == 0
    torch.testing.assert_close(out, dense_moe_reference(moe, x), atol=1e-5, rtol=1e-4)


def test_expert_load_counts_the_share_of_top_k_assignments() -> None:
    logits = torch.tensor([[3.0, 2.0, 0.0], [3.0, 0.0, 2.0], [0.0, 3.0, 2.0], [3.0, 2.0, 1.0]])
    torch.testing.assert_close(expert_load(logits, 1), torch.tensor([0.75, 0.25, 0.0]))
    torch.testing.assert_close(expert_load(logits, 2), torch.tensor([3, 3, 2]) / 8)


def test_load_balancing_loss_is_one_when_balanced_and_n_when_collapsed() -> None:
    n_tokens, n_experts = 64, 8
    balanced = torch.zeros(n_tokens, n_experts)
    balanced[torch.arange(n_tokens), torch.arange(n_tokens) % n_experts] = 1e-3
    assert load_balancing_loss(balanced).item() == pytest.approx(1.0, abs=1e-3)
    collapsed = torch.zeros(n_tokens, n_experts)
    collapsed[:, 0] = 30.0
    assert load_balancing_loss(collapsed).item() == pytest.approx(n_experts, rel=1e-6)
    # The formula, for random logits: N * sum_i f_i P_i, f from the top-k counts.
    logits = torch.randn(n_tokens, n_experts, generator=torch.Generator().manual_seed(0))
    for top_k in (1, 2):
        f = expert_load(logits, top_k)
        P = torch.softmax(logits, dim=-1).mean(0)
        torch.testing.assert_close(load_balancing_loss(logits, top_k), n_experts * (f * P).sum())


def test_the_load_balancing_gradient_moves_probability_off_the_busiest_expert() -> None:
    logits = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    logits[:, 2] += 2.0  # expert 2 takes most tokens
    logits.requires_grad_(True)
    load_balancing_loss(logits).backward()
    # Gradient descent lowers the busy expert's logits and raises the others'.
    assert (logits.grad[:, 2] > 0).all()
    assert (logits.grad[:, [0, 1, 3]].sum(1) < 0).all()


def test_gpt_adds_the_load_balancing_loss_to_its_training_loss_only() -> None:
    torch.manual_seed(0)
    config = small_config(mlp="moe", n_experts=4, n_experts_per_token=2, activation="silu",
                          router_aux_loss_coef=0.5)  # fmt: skip
    model = GPT(config)
    idx = torch.randint(64, (2, 8), generator=torch.Generator().manual_seed(0))
    out = model.train()(idx, targets=idx)
    per_layer = [load_balancing_loss(b.mlp.last_router_logits, 2) for b in model.blocks]
    torch.testing.assert_close(out.aux_loss, torch.stack(per_layer).mean())
    torch.testing.assert_close(router_aux_loss(model), out.aux_loss)
    model.eval()
    evaluated = model(idx, targets=idx)
    torch.testing.assert_close(out.loss, evaluated.loss + 0.5 * out.aux_loss)  # no dropout here
    torch.testing.assert_close(evaluated.aux_loss, out.aux_loss)
    out.loss.backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    dense = GPT(small_config())
    assert dense(idx, targets=idx).aux_loss is None and router_aux_loss(dense) is None


# ---------------------------------------------------------------------- Block
def make_block(**overrides) -> Block:
    return randomise(Block(small_config(**overrides)))


def attention(block: Block, h: torch.Tensor) -> torch.Tensor:
    return block.attn(h, torch.arange(h.size(1)))[0]


def run(block: Block, x: torch.Tensor) -> torch.Tensor:
    return block(x, torch.arange(x.size(1)))[0]


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_post_ln_block_normalises_after_each_residual_sum(norm: str) -> None:
    block = make_block(norm_placement="post", norm=norm)
    x = torch.randn(2, 7, 32)
    h = block.ln_1(x + attention(block, x))
    expected = block.ln_2(h + block.mlp(h))
    torch.testing.assert_close(run(block, x), expected)
    assert block.ln_1 is not block.ln_2


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_pre_ln_block_normalises_only_the_branch_inputs(norm: str) -> None:
    block = make_block(norm_placement="pre", norm=norm)
    x = torch.randn(2, 7, 32)
    h = x + attention(block, block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    torch.testing.assert_close(run(block, x), expected)


def test_pre_ln_block_is_the_identity_when_both_branches_output_zero() -> None:
    block = make_block(norm_placement="pre")
    with torch.no_grad():
        for layer in (block.attn.out_proj, block.mlp.fc_out):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(2, 7, 32) * 5
    torch.testing.assert_close(run(block, x), x)


def test_parallel_block_adds_both_branches_to_the_same_input() -> None:
    block = make_block(norm_placement="parallel")
    x = torch.randn(2, 7, 32)
    expected = x + attention(block, block.ln_1(x)) + block.mlp(block.ln_2(x))
    torch.testing.assert_close(run(block, x), expected)
    assert block.ln_1 is not block.ln_2


def test_parallel_block_with_a_shared_norm_really_shares_it() -> None:
    shared = make_block(norm_placement="parallel", shared_norm=True)
    separate = make_block(norm_placement="parallel")
    norms = [m for m in shared.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 1  # GPT-J stores one LayerNorm per block
    assert n_params(separate) - n_params(shared) == 2 * 32  # one LayerNorm's gain and bias
    x = torch.randn(2, 7, 32)
    h = shared.ln_1(x)
    torch.testing.assert_close(run(shared, x), x + attention(shared, h) + shared.mlp(h))
    # The one norm is computed once per forward pass, and both branches read its output.
    calls = []
    handle = shared.ln_1.register_forward_hook(lambda module, args, out: calls.append(out))
    run(shared, x).sum().backward()
    handle.remove()
    assert len(calls) == 1
    # Its gain receives gradient from both branches: silencing one branch changes that gradient.
    both = shared.ln_1.weight.grad.clone()
    shared.zero_grad()
    with torch.no_grad():
        shared.mlp.fc_out.weight.zero_()
    run(shared, x).sum().backward()
    assert not torch.allclose(shared.ln_1.weight.grad, both)


@pytest.mark.parametrize("placement", ["post", "pre", "parallel"])
@pytest.mark.parametrize("mlp", ["mlp", "swiglu", "moe"])
def test_every_block_is_causal(placement: str, mlp: str) -> None:
    extra = dict(n_experts=4, n_experts_per_token=2) if mlp == "moe" else {}
    block = make_block(norm_placement=placement, mlp=mlp, **extra)
    x = torch.randn(1, 8, 32)
    changed = x.clone()
    changed[:, 5:] += torch.randn(1, 3, 32)
    torch.testing.assert_close(run(block, x)[:, :5], run(block, changed)[:, :5])
    assert not torch.allclose(run(block, x)[:, 5:], run(block, changed)[:, 5:])


def test_block_returns_attention_weights_when_asked() -> None:
    block = make_block()
    x = torch.randn(2, 6, 32)
    y, weights = block(x, torch.arange(6), return_attention=True)
    assert weights.shape == (2, 4, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    torch.testing.assert_close(y, run(block, x), atol=1e-5, rtol=1e-5)
    assert block(x, torch.arange(6))[1] is None


def test_post_ln_relu_block_equals_the_classic_multihead_attention_layer() -> None:
    # The original Transformer's layer: nn.MultiheadAttention, a ReLU FFN, residual then norm.
    block = make_block(norm_placement="post", activation="relu")
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.attn.qkv.weight)  # both stack [W_q; W_k; W_v]
        mha.in_proj_bias.copy_(block.attn.qkv.bias)
        mha.out_proj.weight.copy_(block.attn.out_proj.weight)
        mha.out_proj.bias.copy_(block.attn.out_proj.bias)
    mha.eval()
    x = torch.randn(2, 7, 32)
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    a = mha(x, x, x, attn_mask=future, need_weights=False)[0]
    h = block.ln_1(x + a)
    expected = block.ln_2(h + block.mlp.fc_out(torch.relu(block.mlp.fc_in(h))))
    torch.testing.assert_close(run(block, x), expected, atol=1e-5, rtol=1e-5)


def test_dropout_only_acts_in_training_mode() -> None:
    block = randomise(Block(small_config(dropout=0.5)))
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(run(block, x), run(block, x))
    block.train()
    assert not torch.allclose(run(block, x), run(block, x))


# Before: eps=-1e-6 or NaN and dim=0 built a norm that returned NaN or nothing.
@pytest.mark.parametrize(
    ("args", "error", "name"),
    [((0,), ValueError, "dim"), ((16.0,), TypeError, "dim"), ((16, -1e-6), ValueError, "eps"),
     ((16, float("nan")), ValueError, "eps"), ((16, "1e-6"), TypeError, "eps")],
    ids=["no width", "float width", "negative eps", "NaN eps", "text eps"],
)  # fmt: skip
def test_rmsnorm_names_a_bad_width_or_eps(args, error, name) -> None:
    with pytest.raises(error, match=name):
        RMSNorm(*args)
