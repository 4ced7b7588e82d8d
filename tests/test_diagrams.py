"""gptlib.diagrams: each diagram draws, and what it writes (shapes, counts, heads, angles) is right."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.patches import FancyBboxPatch

from gptlib import GPT, GPTConfig
from gptlib.diagrams import (
    draw_attention_heads,
    draw_block,
    draw_gpt,
    draw_rotation,
    parameter_breakdown,
)
from gptlib.positional import Rotary

SMALL = dict(n_layer=3, n_head=4, n_embd=64, block_size=128, vocab_size=101)
PRESET_SIZES = {"mixtral": dict(SMALL, n_kv_head=2, n_experts=4), "gpt-j": SMALL}


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _texts(ax) -> list[str]:
    return [text.get_text() for text in ax.texts]


def _gids(ax, gid: str) -> list:
    return [patch for patch in ax.patches if patch.get_gid() == gid]


@pytest.mark.parametrize("preset", GPTConfig.presets())
def test_parameter_breakdown_adds_up_to_the_model(preset):
    config = GPTConfig.from_preset(preset, **PRESET_SIZES.get(preset, SMALL))
    parts = parameter_breakdown(config)
    per_block = parts["attention"] + parts["feed_forward"] + parts["norms"]
    total = sum(parts.values()) + (config.n_layer - 1) * per_block
    assert total == GPT.count_params(config)
    assert parts["token_embedding"] == config.vocab_size * config.n_embd
    assert (parts["lm_head"] == 0) == config.tie_embeddings


@pytest.mark.parametrize("preset", GPTConfig.presets())
def test_draw_gpt_prints_the_configs_shapes_and_counts(ax, preset):
    config = GPTConfig.from_preset(preset, **PRESET_SIZES.get(preset, SMALL))
    assert draw_gpt(config, ax, title="test") is ax
    text = "\n".join(_texts(ax))
    parts = parameter_breakdown(config)
    assert ax.get_title() == f"test ({GPT.count_params(config):,} parameters)"
    assert f"{config.vocab_size} × {config.n_embd} = {parts['token_embedding']:,}" in text
    assert f"× {config.n_layer}\nblocks" in text
    assert f"{config.n_head} heads" in text and f"{parts['attention']:,}" in text
    assert f"{parts['feed_forward']:,}" in text
    assert ("position embedding" in text) == (config.position == "learned")
    assert ("final " in text) == config.final_norm
    assert bool(_gids(ax, "tied")) == config.tie_embeddings
    norm = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}[config.norm]
    assert norm in text


def test_draw_gpt_shows_post_ln_and_dropout(ax):
    config = GPTConfig.from_preset("gpt1", **SMALL, dropout=0.1)
    draw_gpt(config, ax)
    text = "\n".join(_texts(ax))
    assert "LayerNorm(x + attention(x))" in text and "LayerNorm(x + MLP(x))" in text
    assert "dropout 0.1" in text


@pytest.mark.parametrize(("n_head", "n_kv_head", "kind"),
                         [(4, 4, "multi-head"), (8, 2, "grouped-query"), (6, 1, "multi-query")])  # fmt: skip
def test_draw_attention_heads_splits_q_k_v_into_their_heads(ax, n_head, n_kv_head, kind):
    config = GPTConfig(n_embd=8 * n_head, n_head=n_head, n_kv_head=n_kv_head, dropout=0.1)
    assert draw_attention_heads(config, ax) is ax
    assert len(_gids(ax, "q-head")) == n_head
    assert len(_gids(ax, "k-head")) == len(_gids(ax, "v-head")) == n_kv_head
    assert ax.get_title().startswith(kind)
    text = "\n".join(_texts(ax))
    assert f"W_q: {8 * n_head} × {8 * n_head}" in text
    assert f"W_k: {8 * n_head} × {8 * n_kv_head}" in text
    assert "attention dropout p = 0.1" in text and "then dropout p = 0.1" in text
    # a query head has the colour of the key/value head it reads
    q_colours = [patch.get_facecolor()[:3] for patch in _gids(ax, "q-head")]
    k_colours = [patch.get_facecolor()[:3] for patch in _gids(ax, "k-head")]
    group = n_head // n_kv_head
    assert all(q_colours[h] == k_colours[h // group] for h in range(n_head))


def test_draw_attention_heads_abbreviates_many_heads(ax):
    draw_attention_heads(GPTConfig(n_embd=4096, n_head=32, n_kv_head=8), ax, max_heads=8)
    assert len(_gids(ax, "q-head")) == 8 and "…" in _texts(ax) and "q31" in _texts(ax)
    with pytest.raises(ValueError, match="max_heads=2 is too few"):
        draw_attention_heads(GPTConfig(), ax, max_heads=2)


def _heights(ax, gid: str) -> list[float]:
    return sorted(patch.get_y() for patch in _gids(ax, gid))


def test_draw_block_puts_the_norm_before_the_branch_in_pre_ln_and_after_the_sum_in_post_ln():
    fig, (post, pre) = plt.subplots(1, 2)
    draw_block(GPTConfig(norm_placement="post", dropout=0.1), post)
    draw_block(GPTConfig(norm_placement="pre", dropout=0.1), pre)
    for ax in (post, pre):
        assert len(_gids(ax, "norm")) == len(_gids(ax, "add")) == len(_gids(ax, "dropout")) == 2
        assert "dropout 0.1" in _texts(ax)
    adds, norms = _heights(post, "add"), _heights(post, "norm")
    assert all(norm > add for norm, add in zip(norms, adds, strict=True))  # LN(x + branch)
    adds, norms = _heights(pre, "add"), _heights(pre, "norm")
    branches = _heights(pre, "attention") + _heights(pre, "mlp")
    assert all(n < b < a for n, b, a in zip(norms, branches, adds, strict=True))  # x + f(LN(x))
    assert pre.get_title().startswith("pre-LN") and post.get_title().startswith("post-LN")
    plt.close(fig)


@pytest.mark.parametrize("shared", [True, False])
def test_draw_block_parallel_adds_both_branches_at_one_point(ax, shared):
    draw_block(GPTConfig(norm_placement="parallel", shared_norm=shared), ax, title="J")
    assert len(_gids(ax, "add")) == 1 and len(_gids(ax, "norm")) == (1 if shared else 2)
    assert ax.get_title() == "J"


@pytest.mark.parametrize(
    "changes",
    [dict(norm_placement="post"), dict(norm_placement="pre"),
     dict(norm_placement="parallel", shared_norm=True), dict(norm_placement="parallel")],
)  # fmt: skip
def test_draw_block_boxes_neither_overlap_nor_leave_the_axes(ax, changes):
    draw_block(GPTConfig(dropout=0.1, **changes), ax)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    boxes = [patch.get_bbox() for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    for box in boxes:
        assert x0 <= box.x0 and box.x1 <= x1 and y0 <= box.y0 and box.y1 <= y1, box
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), f"boxes {a} and {b} overlap"


def test_draw_rotation_turns_the_pair_as_gptlib_rotary_does(ax):
    q, k, theta = [1.0, 0.3], [0.6, 0.8], 0.4
    assert draw_rotation(q, k, 8, 5, ax, theta=theta) is ax
    tips = {a.get_gid(): a.xy for a in ax.texts if a.get_gid() in ("q_m", "k_n")}
    rotary = Rotary(2, pairing="interleaved")
    cos, sin = rotary.cos_sin(torch.tensor([8 * theta, 5 * theta]))
    expected = rotary.rotate(torch.tensor([q, k]), cos, sin)
    assert torch.allclose(torch.tensor([tips["q_m"], tips["k_n"]]), expected, atol=1e-6)
    # The title's angle is the angle between q and k plus (m - n)·θ
    between = math.degrees(math.atan2(0.3, 1.0) - math.atan2(0.8, 0.6) + 3 * theta)
    assert ax.get_title().endswith(f"{(between + 180) % 360 - 180:.1f}°")


def test_draw_rotation_angle_depends_on_the_offset_only():
    fig, axes = plt.subplots(1, 3)
    titles = [draw_rotation([1, 0], [0, 1], m, m - 3, ax, 0.7).get_title() for m, ax in
              zip((3, 10, 100), axes, strict=True)]  # fmt: skip
    assert len({title.split(": ")[1] for title in titles}) == 1
    plt.close(fig)


def test_bad_input_is_refused_with_a_clear_error(ax):
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        draw_gpt({"n_layer": 2}, ax)
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        draw_block(GPTConfig(), None)
    with pytest.raises(ValueError, match="2 numbers"):
        draw_rotation([1.0, 2.0, 3.0], [1.0, 0.0], 1, 0, ax)
