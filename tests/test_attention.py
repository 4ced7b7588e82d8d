"""gptlib.attention against attention written out by hand, as notebooks/04_attention.ipynb builds it.

Model-level behaviour (causality of the whole GPT, cache == no cache, the two attention paths of a
model) is in test_model.py; these tests pin down the attention layer itself.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gptlib import GPT, GPTConfig
from gptlib.attention import (
    CausalSelfAttention,
    KVCache,
    attention_mask,
    explicit_attention,
    kv_cache_bytes,
)
from gptlib.positional import alibi_bias, alibi_slopes


def attention_by_hand(x, layer: CausalSelfAttention, bias=None, scale=None):
    """Reference: project with the layer's own weights, one head at a time, in plain loops."""
    B, T, C = x.shape
    H, H_kv, hd = layer.n_head, layer.n_kv_head, layer.head_dim
    w, b = layer.qkv.weight, layer.qkv.bias
    scale = 1 / math.sqrt(hd) if scale is None else scale
    if bias is None:
        bias = torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    heads = []
    for h in range(H):
        g = h // (H // H_kv)  # the key/value head serving query head h
        rows_q = slice(h * hd, (h + 1) * hd)
        rows_k = slice(H * hd + g * hd, H * hd + (g + 1) * hd)
        rows_v = slice((H + H_kv) * hd + g * hd, (H + H_kv) * hd + (g + 1) * hd)
        q, k, v = (
            x @ w[rows].T + (0 if b is None else b[rows]) for rows in (rows_q, rows_k, rows_v)
        )
        scores = q @ k.transpose(-2, -1) * scale + (bias[h] if bias.dim() == 3 else bias)
        heads.append(torch.softmax(scores, dim=-1) @ v)
    return layer.out_proj(torch.cat(heads, dim=-1))


def randomised_layer(seed=0, **config) -> CausalSelfAttention:
    torch.manual_seed(seed)
    layer = CausalSelfAttention(GPTConfig(**{"n_embd": 32, "n_head": 4, **config})).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return layer


@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("return_attention", [False, True], ids=["fused", "explicit"])
def test_layer_equals_attention_written_out_head_by_head(n_kv_head, return_attention):
    layer = randomised_layer(n_kv_head=n_kv_head)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        y, weights = layer(x, torch.arange(9), return_attention=return_attention)
        torch.testing.assert_close(y, attention_by_hand(x, layer), rtol=1e-5, atol=1e-5)
    assert (weights is not None) == return_attention


def test_fused_qkv_is_laid_out_q_then_k_then_v():
    layer = randomised_layer(n_kv_head=2)
    assert layer.qkv.weight.shape == ((4 + 2 * 2) * 8, 32)
    # Zero the value rows: the output becomes out_proj's bias alone.
    with torch.no_grad():
        layer.qkv.weight[(4 + 2) * 8 :] = 0
        layer.qkv.bias[(4 + 2) * 8 :] = 0
        y, _ = layer(torch.randn(1, 5, 32), torch.arange(5))
    torch.testing.assert_close(y, layer.out_proj.bias.expand(1, 5, 32))


def test_grouped_query_attention_is_multi_head_with_shared_key_value_heads():
    gqa = randomised_layer(n_kv_head=2)
    mha = CausalSelfAttention(GPTConfig(n_embd=32, n_head=4)).eval()

    def repeat(t):  # query heads 0, 1 use key/value head 0; heads 2, 3 use head 1
        return t.view(2, 8, *t.shape[1:]).repeat_interleave(2, dim=0).flatten(0, 1)

    with torch.no_grad():
        q, k, v = gqa.qkv.weight.split([32, 16, 16])
        qb, kb, vb = gqa.qkv.bias.split([32, 16, 16])
        mha.qkv.weight.copy_(torch.cat([q, repeat(k), repeat(v)]))
        mha.qkv.bias.copy_(torch.cat([qb, repeat(kb), repeat(vb)]))
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
        x = torch.randn(2, 7, 32)
        torch.testing.assert_close(gqa(x, torch.arange(7))[0], mha(x, torch.arange(7))[0])


def test_explicit_attention_matches_pytorch_with_and_without_a_bias():
    q, k, v = torch.randn(3, 2, 4, 6, 8).unbind(0)
    out, weights = explicit_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    )
    assert torch.all(weights.triu(1) == 0)
    bias = torch.randn(6, 6)
    out, _ = explicit_attention(q, k, v, scale=0.3, bias=bias)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, bias, scale=0.3))


def test_explicit_attention_without_a_mask_is_permutation_equivariant():
    x = torch.randn(1, 1, 7, 8)
    perm = torch.randperm(7)
    no_mask = torch.zeros(7, 7)
    out, _ = explicit_attention(x, x, x, scale=0.5, bias=no_mask)
    out_perm, _ = explicit_attention(x[:, :, perm], x[:, :, perm], x[:, :, perm], 0.5, no_mask)
    torch.testing.assert_close(out_perm, out[:, :, perm])


@given(
    length=st.integers(1, 12),
    head_dim=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_attention_weights_are_causal_distributions(length, head_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 1, 2, length, head_dim, generator=gen).unbind(0)
    _, weights = explicit_attention(q, k, v, scale=1 / math.sqrt(head_dim))
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, length))
    assert torch.all(weights >= 0) and torch.all(weights.triu(1) == 0)
    assert torch.all(weights[..., 0, 0] == 1)  # the first query can only see itself


def test_scale_switch_gives_raw_scores_as_gpt_neo_does():
    scaled = randomised_layer(seed=1)
    raw = randomised_layer(seed=1, attention_scale=False)
    assert raw.scale == 1.0 and scaled.scale == pytest.approx(1 / math.sqrt(8))
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(raw(x, torch.arange(6))[0], attention_by_hand(x, raw, scale=1.0))


def test_alibi_layer_adds_slope_times_distance_to_the_scores():
    layer = randomised_layer(position="alibi")
    T = 8
    causal = torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    bias = alibi_bias(alibi_slopes(4), torch.arange(T), torch.arange(T)) + causal
    x = torch.randn(2, T, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, torch.arange(T))[0], attention_by_hand(x, layer, bias))


# ---------------------------------------------------------------------- masks
def test_masks_of_each_layout():
    pos = torch.arange(8)
    i, j = pos[:, None], pos[None, :]
    assert torch.equal(attention_mask("dense", pos, pos), j <= i)
    assert torch.equal(attention_mask("local", pos, pos, window_size=3), (j <= i) & (i - j < 3))
    strided = attention_mask("strided", pos, pos, sparse_stride=3)
    assert torch.equal(strided, (j <= i) & ((i - j < 3) | ((i - j) % 3 == 0)))
    assert strided[7, 1] and strided[7, 4] and not strided[7, 3]
    # With a cache the queries are the last positions; the mask is about positions, not indices.
    assert torch.equal(attention_mask("dense", pos[-2:], pos), (j <= i)[-2:])
    with pytest.raises(ValueError, match="unknown attention layout 'sliding'"):
        attention_mask("sliding", pos, pos)


# ---------------------------------------------------------------------- cache
@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_cache_holds_n_kv_head_heads_and_its_size_follows_the_config(n_kv_head):
    config = GPTConfig(vocab_size=20, block_size=32, n_layer=3, n_head=4, n_kv_head=n_kv_head,
                       n_embd=32)  # fmt: skip
    model = GPT(config).eval()
    cache = KVCache(config.n_layer)
    with torch.no_grad():
        model(torch.randint(20, (2, 5)), kv_cache=cache)
        model(torch.randint(20, (2, 1)), kv_cache=cache)
    assert cache.length == 6
    for layer in cache.layers:
        assert layer.k.shape == layer.v.shape == (2, n_kv_head, 6, config.head_dim)
        assert torch.equal(layer.positions, torch.arange(6))
    assert cache.num_cached() == 3 * 6
    held = sum(t.numel() for layer in cache.layers for t in (layer.k, layer.v))
    assert held == 2 * config.n_layer * n_kv_head * config.head_dim * 6 * 2


def test_kv_cache_bytes_counts_what_the_cache_holds() -> None:
    config = GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
    cache = KVCache(config.n_layer)
    with torch.no_grad():
        GPT(config).eval()(torch.randint(50, (1, 10)), kv_cache=cache)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.k, layer.v))
    assert kv_cache_bytes(config, n_tokens=10, bytes_per_value=4) == held
    assert kv_cache_bytes(config, 10, bytes_per_value=0.5) == held // 8  # 4-bit numbers


_SMALL = GPTConfig(vocab_size=20, block_size=32, n_layer=2, n_head=2, n_embd=16)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((_SMALL, -1), ValueError, "n_tokens"),
        ((_SMALL, 2.5), TypeError, "n_tokens"),
        ((_SMALL, 4, 0), ValueError, "bytes_per_value"),
        ((_SMALL, 4, float("nan")), ValueError, "bytes_per_value"),
        ((_SMALL, 4, "2"), TypeError, "bytes_per_value"),
        (({"n_layer": 2}, 4), TypeError, "GPTConfig"),
    ],
    ids=["negative tokens", "fractional tokens", "zero bytes", "NaN bytes", "text bytes", "dict"],
)
def test_kv_cache_bytes_names_a_bad_argument(args, error, message) -> None:
    with pytest.raises(error, match=message):
        kv_cache_bytes(*args)


def test_kv_cache_bytes_asks_for_the_config_of_a_model() -> None:
    with pytest.raises(TypeError, match="pass model.config"):
        kv_cache_bytes(GPT(_SMALL), 4)


def test_a_cache_filled_by_one_model_is_refused_by_another_of_the_same_shape() -> None:
    torch.manual_seed(0)
    first, second = GPT(_SMALL).eval(), GPT(_SMALL).eval()
    idx = torch.randint(20, (2, 6))
    cache = KVCache(_SMALL.n_layer)
    with torch.no_grad():
        first(idx, kv_cache=cache)
        with pytest.raises(ValueError, match="filled by another model"):
            second(idx[:, :1], kv_cache=cache)
        first(idx[:, :1], kv_cache=cache)  # its own model goes on
    assert cache.length == 7


# Before: a window of 0 masked every key (every attention row NaN), 2.5 was used as it was,
# and a missing window or a stride of 0 failed inside torch.
@pytest.mark.parametrize(
    ("layout", "sizes", "error", "name"),
    [
        ("local", {}, TypeError, "window_size"),
        ("local", {"window_size": 0}, ValueError, "window_size"),
        ("local", {"window_size": 2.5}, TypeError, "window_size"),
        ("strided", {"sparse_stride": 0}, ValueError, "sparse_stride"),
        ("strided", {}, TypeError, "sparse_stride"),
    ],
    ids=["no window", "window 0", "fractional window", "stride 0", "no stride"],
)
def test_a_mask_names_the_size_its_layout_needs(layout, sizes, error, name) -> None:
    pos = torch.arange(4)
    with pytest.raises(error, match=f"{name} must be a positive integer"):
        attention_mask(layout, pos, pos, **sizes)
