"""Pictures of attention: one head's map, a grid of every head, score tables, the layouts.

Taught in notebooks/15_attention_maps.ipynb.

Every plotting function returns a matplotlib Figure (show it with plt.show() or save it), for
static pages and print. The interactive views (head view, model view, pattern view) live in
gptlib/attention_views.py; `head_view`, `model_view`, `pattern_view` and `attention_view` are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .attention import attention_mask
from .attention_views import (
    AttentionView,
    attention_view,
    check_tokens,
    head_view,
    model_view,
    pattern_view,
    show_token,
    stack_sequence,
)
from .positional import alibi_bias, alibi_slopes
from .sampling import check_integer

__all__ = [
    "LAYOUTS",
    "AttentionView",
    "attention_explorer",
    "attention_grid",
    "attention_heatmap",
    "attention_layouts_figure",
    "attention_view",
    "head_scores_figure",
    "head_view",
    "layout_matrix",
    "model_view",
    "pattern_view",
    "show_token",
]

LAYOUTS = ("dense", "local", "strided", "sliding", "alibi")
_TITLES = {
    "dense": "dense causal",
    "local": "local window (w={window})",
    "strided": "strided sparse (stride={stride})",
    "sliding": "sliding window: reach after {layers} layers",
    "alibi": "ALiBi bias, head 1 of {heads}",
}


def _as_array(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=np.float32)


def _draw(ax: plt.Axes, weights: np.ndarray, tokens: list[str] | None, title: str) -> None:
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    if tokens is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("key position (attended to)", fontsize=8)
        ax.set_ylabel("query position (attending)", fontsize=8)
        return
    labels = [show_token(t) for t in tokens]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("key (attended to)", fontsize=8)
    ax.set_ylabel("query (attending)", fontsize=8)


def attention_heatmap(
    attn: torch.Tensor | np.ndarray, tokens: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """One head's (T, T) attention map as a heatmap: row = query, column = key it attends to."""
    weights = _as_array(attn)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(
            f"attention_heatmap draws one head, a square (T, T) map; got shape {weights.shape}. "
            "Pick one: attentions[layer][batch, head]"
        )
    labels = None if tokens is None else check_tokens(tokens, weights.shape[0])
    size = min(8.0, 2.5 + 0.16 * weights.shape[0])
    fig, ax = plt.subplots(figsize=(size, size))
    _draw(ax, weights, labels, title or "attention weights")
    fig.colorbar(ax.images[0], ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def attention_grid(
    attentions: Sequence[torch.Tensor] | torch.Tensor,
    tokens: Sequence[str] | None = None,
    batch_index: int = 0,
    panel_size: float = 2.2,
) -> Figure:
    """Every head of every layer as a grid of heatmaps: one row per layer, one column per head.

    Tokens label the outer axes only; with more than 24 positions no labels are drawn and the
    outer axes say "key" and "query" instead. Raises ValueError as `stack_sequence` does.
    """
    weights = stack_sequence(attentions, batch_index)
    n_layer, n_head, T, _ = weights.shape
    labels = None if tokens is None else check_tokens(tokens, T)
    fig, axes = plt.subplots(
        n_layer,
        n_head,
        figsize=(panel_size * n_head, panel_size * n_layer),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    show_labels = labels is not None and T <= 24
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer, head]
            ax.imshow(weights[layer, head], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
            ax.set_xticks(range(T) if show_labels else [])
            ax.set_yticks(range(T) if show_labels else [])
    if show_labels:
        visible = [show_token(t) for t in labels]
        for ax in axes[-1]:
            ax.set_xticklabels(visible, rotation=90, fontsize=6)
        for ax in axes[:, 0]:
            ax.set_yticklabels(visible, fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("key (attended to)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("query (attending)", fontsize=7)
    fig.tight_layout()
    return fig


def head_scores_figure(
    scores: torch.Tensor | np.ndarray | dict[str, torch.Tensor | np.ndarray],
    title: str = "score",
    vmin: float = 0.0,
    vmax: float = 1.0,
    fmt: str = "{:.2f}",
) -> Figure:
    """A layer x head table of scores as a heatmap with each value written in its cell.

    Pass a dict {panel title: (n_layer, n_head) scores} to compare models side by side. The
    colours span [vmin, vmax] (for signed values such as a change in loss or a copying score,
    a range around 0 gives a diverging map); `fmt` formats the numbers.
    """
    if not vmin < vmax:
        raise ValueError(f"need vmin < vmax, got vmin={vmin}, vmax={vmax}")
    panels = dict(scores) if isinstance(scores, dict) else {title: scores}
    arrays = {name: _as_array(value) for name, value in panels.items()}
    if not arrays or any(a.ndim != 2 for a in arrays.values()):
        raise ValueError("scores must be (n_layer, n_head) tables, e.g. from gptlib.interpret")
    n_layer, n_head = next(iter(arrays.values())).shape
    width, height = 1.0 + 0.7 * n_head, 0.9 + 0.55 * n_layer
    fig, axes = plt.subplots(1, len(arrays), figsize=(width * len(arrays), height), squeeze=False)
    for ax, (name, values) in zip(axes[0], arrays.items(), strict=True):
        signed = vmin < 0 < vmax
        ax.imshow(values, cmap="RdBu_r" if signed else "Oranges", vmin=vmin, vmax=vmax)
        for (layer, head), value in np.ndenumerate(values):
            strength = (
                (abs(value) / max(abs(vmin), vmax)) if signed else (value - vmin) / (vmax - vmin)
            )
            colour = "white" if strength > 0.6 else "black"
            ax.text(
                head, layer, fmt.format(value), ha="center", va="center", fontsize=8, color=colour
            )
        ax.set_xticks(range(values.shape[1]))
        ax.set_yticks(range(values.shape[0]))
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def layout_matrix(
    layout: str,
    seq_len: int = 16,
    window_size: int = 4,
    sparse_stride: int = 4,
    stacked_layers: int = 3,
    n_head: int = 8,
) -> torch.Tensor:
    """The (T, T) picture of one attention layout from LAYOUTS, built with gptlib's own masks.

    "dense", "local", "strided": the boolean mask of gptlib.attention.attention_mask, as 0/1.
    "sliding": which keys reach a query through `stacked_layers` local layers (the reason a
    Mistral-style sliding window sees further than its window). "alibi": head 0's additive bias
    from gptlib.positional.alibi_bias, with masked positions as NaN (blank in a picture).
    Raises ValueError for an unknown layout, TypeError or ValueError for a size that is not a
    positive integer (a window of 0 drew an empty picture, a stride of 0 divided by zero).
    """
    for name, value in (("seq_len", seq_len), ("window_size", window_size),
                        ("sparse_stride", sparse_stride), ("stacked_layers", stacked_layers),
                        ("n_head", n_head)):  # fmt: skip
        check_integer(name, value, 1, "a positive integer")
    positions = torch.arange(seq_len)
    if layout in ("dense", "local", "strided"):
        return attention_mask(layout, positions, positions, window_size, sparse_stride).float()
    if layout == "sliding":
        one_layer = attention_mask("local", positions, positions, window_size).float()
        reach = one_layer
        for _ in range(stacked_layers - 1):
            reach = ((reach @ one_layer) > 0).float()
        return reach
    if layout == "alibi":
        bias = alibi_bias(alibi_slopes(n_head), positions, positions)[0]
        allowed = attention_mask("dense", positions, positions)
        return bias.masked_fill(~allowed, float("nan"))
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


def attention_layouts_figure(
    layouts: Sequence[str] = LAYOUTS,
    seq_len: int = 16,
    window_size: int = 4,
    sparse_stride: int = 4,
    stacked_layers: int = 3,
    n_head: int = 8,
) -> Figure:
    """One panel per attention layout: which keys (columns) each query (row) may use."""
    layouts = (layouts,) if isinstance(layouts, str) else tuple(layouts)  # one named alone
    if not layouts:
        raise ValueError(f"pass at least one layout from {LAYOUTS}")
    fig, axes = plt.subplots(1, len(layouts), figsize=(3.0 * len(layouts), 3.4), squeeze=False)
    for ax, layout in zip(axes[0], layouts, strict=True):
        matrix = layout_matrix(layout, seq_len, window_size, sparse_stride, stacked_layers, n_head)
        cmap = "viridis" if layout == "alibi" else "Greys"
        image = ax.imshow(matrix.numpy(), cmap=cmap, interpolation="nearest")
        if layout == "alibi":
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        title = _TITLES[layout].format(
            window=window_size, stride=sparse_stride, layers=stacked_layers, heads=n_head
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key position", fontsize=8)
        ax.set_ylabel("query position", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def attention_explorer(
    attentions: Sequence[torch.Tensor] | torch.Tensor,
    tokens: Sequence[str],
    batch_index: int = 0,
):
    """An ipywidgets explorer: choose a layer and a head, see its heatmap (needs a live kernel).

    `head_view` is the stand-alone version that also works in an exported HTML page.
    """
    import ipywidgets as widgets

    weights = stack_sequence(attentions, batch_index)
    labels = check_tokens(tokens, weights.shape[-1])
    layer = widgets.Dropdown(options=range(weights.shape[0]), description="layer")
    head = widgets.Dropdown(options=range(weights.shape[1]), description="head")

    def draw(layer: int, head: int) -> None:
        attention_heatmap(weights[layer, head], labels, f"layer {layer}, head {head}")
        plt.show()

    output = widgets.interactive_output(draw, {"layer": layer, "head": head})
    return widgets.VBox([widgets.HBox([layer, head]), output])
