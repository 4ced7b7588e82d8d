"""gptlib.positional against the formulas of notebooks/05_positional_encodings.ipynb."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptlib import GPT, GPTConfig
from gptlib.positional import (
    LearnedPositions,
    Rotary,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    rotary_frequencies,
    sinusoidal_table,
)


def rotate_pairs(x, positions, pairs, base=10000.0):
    """Reference rotary: turn each pair (a, b) of dims of x by position · base^(-2i/d)."""
    d = 2 * len(pairs)
    out = x.clone()
    for i, (a, b) in enumerate(pairs):
        angle = positions.double() * base ** (-2 * i / d)
        cos, sin = angle.cos().float()[:, None], angle.sin().float()[:, None]
        xa, xb = x[..., a : a + 1], x[..., b : b + 1]
        out[..., a : a + 1] = xa * cos - xb * sin
        out[..., b : b + 1] = xa * sin + xb * cos
    return out


def interleaved_pairs(d):
    return [(2 * i, 2 * i + 1) for i in range(d // 2)]


def half_pairs(d):
    return [(i, i + d // 2) for i in range(d // 2)]


# ---------------------------------------------------------------------- learned
def test_learned_positions_are_a_trainable_table():
    table = LearnedPositions(16, 8)
    assert table.weight.shape == (16, 8) and table.weight.requires_grad
    with torch.no_grad():
        table.weight.copy_(torch.arange(16.0)[:, None].expand(16, 8))
    assert torch.equal(table(torch.tensor([3, 0]))[:, 0], torch.tensor([3.0, 0.0]))
    with pytest.raises(IndexError):
        table(torch.tensor([16]))


# ---------------------------------------------------------------------- sinusoidal
@pytest.mark.parametrize("n_embd", [8, 5])
def test_sinusoidal_table_is_the_transformer_formula(n_embd):
    table = sinusoidal_table(torch.arange(50), n_embd)
    assert table.shape == (50, n_embd)
    for p in (0, 1, 17, 49):
        for dim in range(n_embd):
            angle = p / 10000 ** ((dim - dim % 2) / n_embd)
            expected = math.sin(angle) if dim % 2 == 0 else math.cos(angle)
            assert table[p, dim].item() == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(SinusoidalPositions(n_embd)(torch.arange(50)), table)


def test_sinusoidal_dot_products_depend_only_on_the_offset():
    table = sinusoidal_table(torch.arange(200), 32)
    dots = table @ table.T
    for offset in (0, 1, 7, 60):
        diagonal = dots.diagonal(offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-4, rtol=0)


def test_sinusoidal_positions_exist_beyond_any_block_size():
    far = sinusoidal_table(torch.tensor([5000]), 16)
    assert far.shape == (1, 16) and torch.isfinite(far).all()


# ---------------------------------------------------------------------- rotary
@pytest.mark.parametrize(
    ("pairing", "pairs"), [("interleaved", interleaved_pairs), ("half", half_pairs)]
)
def test_rotary_rotates_the_documented_pairs(pairing, pairs):
    rotary = Rotary(12, pairing=pairing)
    q, k = torch.randn(2, 2, 3, 9, 12).unbind(0)
    positions = torch.arange(4, 13)
    q_rot, k_rot = rotary(q, k, positions)
    torch.testing.assert_close(q_rot, rotate_pairs(q, positions, pairs(12)))
    torch.testing.assert_close(k_rot, rotate_pairs(k, positions, pairs(12)))


def test_rotary_at_position_zero_is_the_identity_and_keeps_lengths():
    rotary = Rotary(16)
    x = torch.randn(1, 1, 5, 16)
    q0, _ = rotary(x[:, :, :1], x[:, :, :1], torch.tensor([0]))
    torch.testing.assert_close(q0, x[:, :, :1])
    q, _ = rotary(x, x, torch.arange(100, 105))
    torch.testing.assert_close(q.norm(dim=-1), x.norm(dim=-1))


@given(
    m=st.integers(0, 2000),
    n=st.integers(0, 2000),
    shift=st.integers(0, 2000),
    pairing=st.sampled_from(["half", "interleaved"]),
)
def test_rotary_scores_depend_only_on_the_offset(m, n, shift, pairing):
    rotary = Rotary(8, pairing=pairing)
    gen = torch.Generator().manual_seed(m + 7 * n)
    q, k = torch.randn(2, 1, 1, 1, 8, generator=gen).unbind(0)

    def score(a, b):
        q_a, _ = rotary(q, q, torch.tensor([a]))
        _, k_b = rotary(k, k, torch.tensor([b]))
        return (q_a * k_b).sum().item()

    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=2e-4)


def test_interleaved_and_half_pairings_are_one_rotation_up_to_a_permutation():
    d = 16
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    q, k = torch.randn(2, 2, 4, 10, d).unbind(0)
    positions = torch.arange(10)
    q_i, k_i = Rotary(d, pairing="interleaved")(q, k, positions)
    q_h, k_h = Rotary(d, pairing="half")(q[..., perm], k[..., perm], positions)
    torch.testing.assert_close(q_h, q_i[..., perm])
    torch.testing.assert_close(q_h @ k_h.transpose(-2, -1), q_i @ k_i.transpose(-2, -1))


def test_partial_rotary_passes_the_other_dimensions_through():
    rotary = Rotary(4, pairing="interleaved")  # GPT-J: rotary_dim < head_dim
    x = torch.randn(1, 2, 6, 16)
    q, _ = rotary(x, x, torch.arange(6))
    assert torch.equal(q[..., 4:], x[..., 4:])
    torch.testing.assert_close(
        q[..., :4], rotate_pairs(x[..., :4], torch.arange(6), [(0, 1), (2, 3)])
    )


def test_rotary_keeps_a_low_precision_dtype():
    q = torch.randn(1, 1, 3, 8, dtype=torch.bfloat16)
    q_rot, k_rot = Rotary(8)(q, q, torch.arange(3))
    assert q_rot.dtype == k_rot.dtype == torch.bfloat16


def test_rotary_refuses_bad_settings():
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        Rotary(7)
    with pytest.raises(ValueError, match="pairing='neox' is unknown"):
        Rotary(8, pairing="neox")


# ---------------------------------------------------------------------- rotary scaling
def test_unscaled_frequencies_are_the_roformer_formula():
    freq = rotary_frequencies(8, base=100.0)
    torch.testing.assert_close(freq, torch.tensor([100.0 ** (-i / 4) for i in range(4)]))
    torch.testing.assert_close(Rotary(8, 100.0).inv_freq, freq, rtol=0, atol=0)


@pytest.mark.parametrize("factor", [2.0, 4.0, 3.5])
def test_linear_scaling_turns_position_m_as_far_as_m_over_factor(factor):
    """Position interpolation: a scaled model at position m sees the angles of m / factor."""
    q = torch.randn(1, 2, 6, 16, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(6) * 8
    scaled = Rotary(16, scaling="linear", factor=factor)
    torch.testing.assert_close(scaled.inv_freq, rotary_frequencies(16) / factor)
    squeezed = Rotary(16).cos_sin(positions.double() / factor)
    for got, want in zip(scaled.cos_sin(positions), squeezed, strict=True):
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=0)
    # The offset property survives the scaling: scores depend only on m - n.
    k = torch.randn(1, 2, 6, 16, generator=torch.Generator().manual_seed(1))
    q1, k1 = scaled(q, k, positions)
    q2, k2 = scaled(q, k, positions + 1000)
    torch.testing.assert_close(
        q1 @ k1.transpose(-1, -2), q2 @ k2.transpose(-1, -2), atol=1e-3, rtol=1e-4
    )


@pytest.mark.parametrize("rotary_dim, factor", [(16, 4.0), (64, 2.0), (4, 8.0)])
def test_ntk_scaling_keeps_the_fastest_pair_and_divides_the_slowest_by_the_factor(
    rotary_dim, factor
):
    plain = rotary_frequencies(rotary_dim, 10000.0)
    ntk = rotary_frequencies(rotary_dim, 10000.0, scaling="ntk", factor=factor)
    assert ntk[0] == plain[0] == 1.0
    torch.testing.assert_close(ntk[-1], plain[-1] / factor, rtol=1e-5, atol=0)
    # In between, each pair is divided by factor^(2i/(d-2)): a little for fast pairs, more for slow.
    ratios = plain / ntk
    expected = torch.tensor([factor ** (2 * i / (rotary_dim - 2)) for i in range(rotary_dim // 2)])
    torch.testing.assert_close(ratios, expected, rtol=1e-5, atol=0)
    # It is the plain formula with the larger base of Peng et al. 2023.
    larger_base = 10000.0 * factor ** (rotary_dim / (rotary_dim - 2))
    torch.testing.assert_close(ntk, rotary_frequencies(rotary_dim, larger_base), rtol=1e-6, atol=0)


def test_rotary_scaling_refuses_bad_settings():
    with pytest.raises(ValueError, match="scaling='yarn' is unknown"):
        rotary_frequencies(8, scaling="yarn", factor=2.0)
    with pytest.raises(ValueError, match="factor=0.5 must be >= 1"):
        Rotary(8, scaling="linear", factor=0.5)
    with pytest.raises(ValueError, match="NTK-aware scaling needs rotary_dim >= 4"):
        rotary_frequencies(2, scaling="ntk", factor=2.0)


def test_a_config_with_rotary_scaling_builds_scaled_layers_and_saves_them(tmp_path):
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32,
                       position="rotary", rotary_fraction=0.5, rotary_scaling="ntk",
                       rotary_scaling_factor=4.0)  # fmt: skip
    model = GPT(config).eval()
    expected = rotary_frequencies(8, scaling="ntk", factor=4.0)
    for block in model.blocks:
        torch.testing.assert_close(block.attn.rotary.inv_freq, expected, rtol=0, atol=0)
    idx = torch.randint(11, (1, 32), generator=torch.Generator().manual_seed(0))
    loaded = GPT.load(model.save(tmp_path / "scaled"))
    assert loaded.config.rotary_scaling == "ntk" and loaded.config.rotary_scaling_factor == 4.0
    torch.testing.assert_close(loaded(idx).logits, model(idx).logits)
    unscaled = GPT(GPTConfig(**{**config.to_dict(), "rotary_scaling": "none",
                                "rotary_scaling_factor": 1.0}))  # fmt: skip
    unscaled.load_state_dict(model.state_dict())
    assert not torch.allclose(unscaled.eval()(idx).logits, model(idx).logits)


# ---------------------------------------------------------------------- ALiBi
def test_alibi_slopes_for_powers_of_two_are_geometric():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(
        alibi_slopes(16), torch.tensor([2.0 ** (-i / 2) for i in range(1, 17)])
    )
    torch.testing.assert_close(alibi_slopes(1), torch.tensor([2.0**-8]))


def test_alibi_slopes_for_other_head_counts_interleave_the_next_power():
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads (Press et al.).
    expected = [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))
    assert alibi_slopes(6).shape == (6,) and alibi_slopes(20).shape == (20,)


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = alibi_slopes(4)
    q_pos, k_pos = torch.arange(5, 8), torch.arange(8)  # three new queries against a cache
    bias = alibi_bias(slopes, q_pos, k_pos)
    assert bias.shape == (4, 3, 8)
    for h in range(4):
        for a, i in enumerate(q_pos.tolist()):
            for j in k_pos.tolist():
                assert bias[h, a, j].item() == pytest.approx(-slopes[h].item() * (i - j))
    # Only the distance matters, never where the sequence starts.
    torch.testing.assert_close(alibi_bias(slopes, q_pos + 100, k_pos + 100), bias)


# ---------------------------------------------------------------------- in a model
@pytest.mark.parametrize("position", ["rotary", "alibi", "sinusoidal", "none"])
def test_schemes_without_a_table_read_past_block_size(position):
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, position=position
    )
    logits = GPT(config).eval()(torch.randint(11, (1, 20))).logits
    assert logits.shape == (1, 20, 11) and torch.isfinite(logits).all()


def test_without_positions_one_causal_layer_sees_a_bag_of_tokens():
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, position="none"
    )
    model = GPT(config).eval()
    idx = torch.tensor([[1, 2, 3, 4, 5, 6, 9]])
    shuffled = torch.tensor([[6, 4, 1, 5, 3, 2, 9]])  # same tokens, same last token
    torch.testing.assert_close(model(idx).logits[0, -1], model(shuffled).logits[0, -1])
    learned = GPT(GPTConfig(**{**config.to_dict(), "position": "learned"})).eval()
    assert not torch.allclose(learned(idx).logits[0, -1], learned(shuffled).logits[0, -1])


@pytest.mark.parametrize("cast", ["to", "half", "bfloat16"])
def test_rotary_frequencies_and_alibi_slopes_stay_float32_in_a_low_precision_model(cast):
    """model.to(dtype) converts buffers too; position angles and slopes must not lose bits."""
    rotary = GPT(GPTConfig(n_layer=1, n_head=3, n_embd=48, position="rotary", rotary_base=500.0))
    alibi = GPT(GPTConfig(n_layer=1, n_head=12, n_embd=48, position="alibi"))
    expected_freq = rotary.blocks[0].attn.rotary.inv_freq.clone()
    expected_slopes = alibi_slopes(12)
    for model in (rotary, alibi):
        {"to": lambda m: m.to(torch.bfloat16), "half": lambda m: m.half(),
         "bfloat16": lambda m: m.bfloat16()}[cast](model)  # fmt: skip
        assert model.tok_emb.weight.dtype in (torch.bfloat16, torch.float16)
    freq = rotary.blocks[0].attn.rotary.inv_freq
    slopes = alibi.blocks[0].attn.alibi_slopes
    assert freq.dtype == slopes.dtype == torch.float32
    torch.testing.assert_close(freq, expected_freq, rtol=0, atol=0)
    torch.testing.assert_close(slopes, expected_slopes, rtol=0, atol=0)
    far = torch.arange(10_000, 10_016)  # the angles at long positions are float32's exactly
    exact = Rotary(16, 500.0).cos_sin(far)
    for got, want in zip(rotary.blocks[0].attn.rotary.cos_sin(far), exact, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert rotary.to("cpu").blocks[0].attn.rotary.inv_freq.dtype == torch.float32  # a move
    rotary.to(torch.float64)  # a more precise dtype converts them
    assert rotary.blocks[0].attn.rotary.inv_freq.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_sinusoidal_model_runs_in_low_precision_with_a_float32_table(dtype):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=10, position="sinusoidal"))
    embedded = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: embedded.update(x=args[0]))
    idx = torch.randint(0, 10, (1, 600), generator=torch.Generator().manual_seed(0))
    model.to(dtype)(idx)
    table = sinusoidal_table(torch.arange(600), 16)  # angles computed in float32, then rounded
    expected = (model.tok_emb(idx) + table.to(dtype)).float()
    torch.testing.assert_close(embedded["x"].float(), expected, rtol=0, atol=0)


# Before: n_head 0 and -4 were a "math domain error", True was one head, base 0 a table of
# NaN and inf, n_embd 0 an empty table, and a list of positions an AttributeError.
@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: alibi_slopes(0), ValueError, "n_head"),
        (lambda: alibi_slopes(-4), ValueError, "n_head"),
        (lambda: alibi_slopes(2.5), TypeError, "n_head"),
        (lambda: alibi_slopes(True), TypeError, "n_head"),
        (lambda: alibi_bias([0.5], torch.arange(3), torch.arange(3)), TypeError, "slopes"),
        (lambda: sinusoidal_table(torch.arange(3), 0), ValueError, "n_embd"),
        (lambda: sinusoidal_table(torch.arange(3), 8, 0), ValueError, "base"),
        (lambda: sinusoidal_table(torch.arange(3), 8, float("nan")), ValueError, "base"),
        (lambda: sinusoidal_table([0, 1], 8), TypeError, "positions"),
    ],
    ids=["0 heads", "negative heads", "fractional heads", "bool heads", "list of slopes",
         "no columns", "base 0", "NaN base", "list of positions"],
)  # fmt: skip
def test_bad_positional_arguments_are_named(call, error, name) -> None:
    with pytest.raises(error, match=name):
        call()
