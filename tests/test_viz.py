"""gptlib.viz: figures with the right panels and axis labels, and layout pictures that match
gptlib's masks. The interactive views are tested in test_attention_views*.py."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gptlib import GPT, GPTConfig
from gptlib.attention import attention_mask
from gptlib.positional import alibi_bias, alibi_slopes
from gptlib.viz import (
    LAYOUTS,
    attention_explorer,
    attention_grid,
    attention_heatmap,
    attention_layouts_figure,
    head_scores_figure,
    layout_matrix,
    show_token,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _attentions(n_layer: int = 2, n_head: int = 4, T: int = 20, seed: int = 0):
    torch.manual_seed(seed)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=n_layer, n_head=n_head, n_embd=8 * n_head, block_size=128, vocab_size=50
    )
    idx = torch.randint(0, 50, (2, T))
    with torch.no_grad():
        out = GPT(config).eval()(idx, return_attention=True)
    tokens = [chr(ord("a") + i % 26) for i in idx[0].tolist()]
    return out.attentions, tokens


def _images(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_heatmap_is_one_panel_labelled_by_tokens() -> None:
    attentions, tokens = _attentions()
    fig = attention_heatmap(attentions[0][0, 1], tokens, title="layer 0, head 1")
    assert isinstance(fig, Figure)
    (ax,) = _images(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    np.testing.assert_allclose(ax.images[0].get_array(), attentions[0][0, 1].numpy())


def test_every_heatmap_names_its_axes() -> None:
    attentions, tokens = _attentions(T=30)
    (ax,) = _images(attention_heatmap(attentions[0][0, 0]))
    assert ax.get_xlabel() == "key position (attended to)"
    assert ax.get_ylabel() == "query position (attending)"
    grid = attention_grid(attentions, tokens)  # too many tokens for labels: axes still named
    assert {ax.get_xlabel() for ax in _images(grid)[-4:]} == {"key (attended to)"}
    assert {ax.get_ylabel() for ax in _images(grid)[::4]} == {"query (attending)"}
    table = _images(head_scores_figure(torch.zeros(2, 3)))[0]
    assert (table.get_xlabel(), table.get_ylabel()) == ("head", "layer")


def test_head_scores_figure_takes_a_signed_range() -> None:
    fig = head_scores_figure(torch.tensor([[-2.0, 3.5]]), "change", vmin=-4, vmax=4, fmt="{:+.1f}")
    (ax,) = _images(fig)
    assert [t.get_text() for t in ax.texts] == ["-2.0", "+3.5"]
    assert ax.images[0].get_cmap().name == "RdBu_r" and ax.images[0].get_clim() == (-4, 4)
    with pytest.raises(ValueError, match="vmin < vmax"):
        head_scores_figure(torch.zeros(1, 1), vmin=1, vmax=1)


def test_figures_refuse_missing_attentions_and_a_batch_index_out_of_range() -> None:
    attentions, tokens = _attentions()
    with pytest.raises(ValueError, match="return_attention=True"):
        attention_grid(None, tokens)
    with pytest.raises(ValueError, match="return_attention=True"):
        attention_grid((None, None), tokens)
    with pytest.raises(ValueError, match="batch_index 2 is out of range.*0 to 1"):
        attention_grid(attentions, tokens, batch_index=2)


def test_heatmap_rejects_a_stack_of_heads() -> None:
    attentions, tokens = _attentions()
    with pytest.raises(ValueError, match="one head"):
        attention_heatmap(attentions[0][0], tokens)


@pytest.mark.parametrize(("n_layer", "n_head"), [(1, 1), (2, 4), (3, 2)])
def test_grid_has_a_panel_per_layer_and_head(n_layer: int, n_head: int) -> None:
    attentions, tokens = _attentions(n_layer, n_head)
    fig = attention_grid(attentions, tokens)
    assert len(_images(fig)) == n_layer * n_head
    last = _images(fig)[-1]
    assert last.get_title() == f"layer {n_layer - 1}, head {n_head - 1}"
    np.testing.assert_allclose(last.images[0].get_array(), attentions[-1][0, -1].numpy())


def test_grid_picks_the_requested_sequence_of_the_batch() -> None:
    attentions, _ = _attentions()
    fig = attention_grid(attentions, batch_index=1)
    np.testing.assert_allclose(_images(fig)[0].images[0].get_array(), attentions[0][1, 0].numpy())


def test_wrong_number_of_tokens_is_a_clear_error() -> None:
    attentions, tokens = _attentions()
    with pytest.raises(ValueError, match="got 19 tokens for attention over 20 positions"):
        attention_grid(attentions, tokens[:-1])


def test_head_scores_figure_writes_every_score_in_its_cell() -> None:
    scores = torch.tensor([[0.1, 0.25, 0.9], [0.0, 0.5, 1.0]])
    fig = head_scores_figure({"trained": scores, "untrained": scores / 10})
    assert len(_images(fig)) == 2
    texts = [t.get_text() for t in _images(fig)[0].texts]
    assert texts == ["0.10", "0.25", "0.90", "0.00", "0.50", "1.00"]
    with pytest.raises(ValueError, match="n_layer, n_head"):
        head_scores_figure(torch.zeros(3))


def test_layouts_figure_has_one_panel_per_layout() -> None:
    assert len(_images(attention_layouts_figure())) == len(LAYOUTS)
    assert len(_images(attention_layouts_figure(layouts=("dense", "alibi")))) == 2
    with pytest.raises(ValueError, match="unknown layout 'banded'"):
        attention_layouts_figure(layouts=("banded",))


@pytest.mark.parametrize("layout", ["dense", "local", "strided"])
def test_layout_pictures_are_gptlibs_masks(layout: str) -> None:
    positions = torch.arange(12)
    expected = attention_mask(layout, positions, positions, window_size=3, sparse_stride=5)
    picture = layout_matrix(layout, 12, window_size=3, sparse_stride=5)
    assert torch.equal(picture.bool(), expected)


def test_sliding_window_reach_grows_by_window_minus_one_per_layer() -> None:
    positions = torch.arange(20)
    for layers in (1, 2, 3):
        reach = layout_matrix("sliding", 20, window_size=4, stacked_layers=layers)
        wider = attention_mask("local", positions, positions, window_size=layers * 3 + 1)
        assert torch.equal(reach.bool(), wider)


def test_alibi_picture_is_the_first_heads_bias_on_allowed_keys() -> None:
    picture = layout_matrix("alibi", 10, n_head=4)
    bias = alibi_bias(alibi_slopes(4), torch.arange(10), torch.arange(10))[0]
    allowed = torch.ones(10, 10, dtype=torch.bool).tril()
    assert torch.isnan(picture[~allowed]).all()
    assert torch.equal(picture[allowed], bias[allowed])


def test_show_token_makes_whitespace_visible() -> None:
    assert show_token(" a\n\t") == "␣a⏎⇥"
    assert show_token("") == "∅"


def test_explorer_offers_every_layer_and_head() -> None:
    widgets = pytest.importorskip("ipywidgets")
    attentions, tokens = _attentions(n_layer=3, n_head=2)
    explorer = attention_explorer(attentions, tokens)
    assert isinstance(explorer, widgets.VBox)
    layer, head = explorer.children[0].children
    assert list(layer.options) == [0, 1, 2] and list(head.options) == [0, 1]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda a, t: attention_heatmap(a[0][0, 0], list(range(len(t)))), TypeError, "strings"),
        (lambda a, t: attention_grid(a, "".join(t)), TypeError, "list of strings"),
        (lambda a, t: attention_grid(a, t, batch_index=1.0), TypeError, "batch_index"),
        (lambda a, t: layout_matrix("local", 8, window_size=0), ValueError, "window_size"),
        (lambda a, t: layout_matrix("strided", 8, sparse_stride=0), ValueError, "sparse_stride"),
        (lambda a, t: layout_matrix("dense", 8.0), TypeError, "seq_len"),
        (lambda a, t: layout_matrix("sliding", 8, stacked_layers=True), TypeError, "stacked"),
        (lambda a, t: attention_layouts_figure([]), ValueError, "at least one layout"),
    ],
    ids=["int labels", "one string", "float batch_index", "window 0", "stride 0",
         "float seq_len", "bool layers", "no layouts"],
)  # fmt: skip
def test_bad_figure_arguments_are_named(call, error, message) -> None:
    attentions, tokens = _attentions(n_layer=1, n_head=2, T=6)
    with pytest.raises(error, match=message):
        call(attentions, tokens)


def test_one_layout_may_be_named_alone() -> None:
    (panel,) = _images(attention_layouts_figure("local", seq_len=8))  # not 5 panels d, e, n...
    np.testing.assert_array_equal(panel.images[0].get_array(), layout_matrix("local", 8).numpy())
