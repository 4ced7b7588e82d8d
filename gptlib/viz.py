"""Pictures of attention: one head's map, a grid of every head, the layouts, an interactive view.

Taught in notebooks/15_attention_maps.ipynb.

Every plotting function returns a matplotlib Figure (show it with plt.show() or save it).
`head_view` returns a self-contained HTML view with its own small script: no network, no
random ids, the same bytes for the same input. It works in JupyterLab (in a trusted
notebook, or once its cell has run) and in nbconvert's HTML export.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .attention import attention_mask
from .positional import alibi_bias, alibi_slopes

__all__ = [
    "LAYOUTS",
    "HeadView",
    "attention_explorer",
    "attention_grid",
    "attention_heatmap",
    "attention_layouts_figure",
    "head_scores_figure",
    "head_view",
    "layout_matrix",
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


def show_token(token: str) -> str:
    """A token as a label a reader can see: spaces, newlines and tabs become visible marks."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def _as_array(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=np.float32)


def _stack(attentions: Sequence[torch.Tensor] | torch.Tensor, batch_index: int) -> np.ndarray:
    """Weights of one sequence as an (n_layer, n_head, T, T) array.

    Accepts what model(..., return_attention=True).attentions holds (n_layer tensors of shape
    (B, n_head, T, T)), a single such tensor, or arrays already without the batch axis.
    """
    layers = [attentions] if isinstance(attentions, torch.Tensor | np.ndarray) else attentions
    if isinstance(attentions, torch.Tensor | np.ndarray) and attentions.ndim == 5:
        layers = list(attentions)
    arrays = [_as_array(a) for a in layers]
    if not arrays or any(a.ndim not in (3, 4) for a in arrays):
        raise ValueError(
            "attentions must be one (n_head, T, T) or (B, n_head, T, T) tensor per layer, as in "
            "model(idx, return_attention=True).attentions"
        )
    arrays = [a[batch_index] if a.ndim == 4 else a for a in arrays]
    if len({a.shape for a in arrays}) != 1 or arrays[0].shape[-1] != arrays[0].shape[-2]:
        raise ValueError(
            f"every layer must hold square maps of one shape, got {[a.shape for a in arrays]}"
        )
    return np.stack(arrays)


def _check_tokens(tokens: Sequence[str], length: int) -> list[str]:
    tokens = [str(t) for t in tokens]
    if len(tokens) != length:
        raise ValueError(
            f"got {len(tokens)} tokens for attention over {length} positions; pass one string per "
            "position, e.g. [tokenizer.decode([i]) for i in ids]"
        )
    return tokens


def _draw(ax: plt.Axes, weights: np.ndarray, tokens: list[str] | None, title: str) -> None:
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    if tokens is None:
        ax.set_xticks([])
        ax.set_yticks([])
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
    labels = None if tokens is None else _check_tokens(tokens, weights.shape[0])
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

    Tokens label the outer axes only; with more than 24 positions no labels are drawn.
    """
    weights = _stack(attentions, batch_index)
    n_layer, n_head, T, _ = weights.shape
    labels = None if tokens is None else _check_tokens(tokens, T)
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
    fig.tight_layout()
    return fig


def head_scores_figure(
    scores: torch.Tensor | np.ndarray | dict[str, torch.Tensor | np.ndarray],
    title: str = "score",
) -> Figure:
    """A layer x head table of scores as a heatmap with each value written in its cell.

    Pass a dict {panel title: (n_layer, n_head) scores} to compare models side by side.
    """
    panels = dict(scores) if isinstance(scores, dict) else {title: scores}
    arrays = {name: _as_array(value) for name, value in panels.items()}
    if not arrays or any(a.ndim != 2 for a in arrays.values()):
        raise ValueError("scores must be (n_layer, n_head) tables, e.g. from gptlib.interpret")
    n_layer, n_head = next(iter(arrays.values())).shape
    width, height = 1.0 + 0.7 * n_head, 0.9 + 0.55 * n_layer
    fig, axes = plt.subplots(1, len(arrays), figsize=(width * len(arrays), height), squeeze=False)
    for ax, (name, values) in zip(axes[0], arrays.items(), strict=True):
        ax.imshow(values, cmap="Oranges", vmin=0.0, vmax=1.0)
        for (layer, head), value in np.ndenumerate(values):
            colour = "white" if value > 0.6 else "black"
            ax.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
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
    """
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

    weights = _stack(attentions, batch_index)
    labels = _check_tokens(tokens, weights.shape[-1])
    layer = widgets.Dropdown(options=range(weights.shape[0]), description="layer")
    head = widgets.Dropdown(options=range(weights.shape[1]), description="head")

    def draw(layer: int, head: int) -> None:
        attention_heatmap(weights[layer, head], labels, f"layer {layer}, head {head}")
        plt.show()

    output = widgets.interactive_output(draw, {"layer": layer, "head": head})
    return widgets.VBox([widgets.HBox([layer, head]), output])


class HeadView:
    """A self-contained interactive attention view; Jupyter shows it through `_repr_html_`."""

    def __init__(self, html_text: str, summary: str = "") -> None:
        self.html = html_text
        self.summary = summary

    def __repr__(self) -> str:
        return f"HeadView({self.summary}{', ' if self.summary else ''}{len(self)} bytes of HTML)"

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        """Write the view as a complete HTML page that opens in any browser, offline."""
        path = Path(path)
        page = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{self.html}\n'
        path.write_text(page + "</body></html>\n", encoding="utf-8")
        return path

    def __len__(self) -> int:
        return len(self.html.encode("utf-8"))


# The view's behaviour; `root` is the view's <div>. Weights arrive as base64 bytes, the lower
# triangle of each head's map row by row (query q, keys 0..q), layer-major then head.
_SCRIPT = """
var data = JSON.parse(root.querySelector(".gptlib-hv-data").textContent);
var n = data.n, tri = n * (n + 1) / 2, raw = atob(data.weights);
var levels = new Uint8Array(raw.length);
for (var i = 0; i < raw.length; i++) levels[i] = raw.charCodeAt(i);
var layerSel = root.querySelector(".gptlib-hv-layer"), headSel = root.querySelector(".gptlib-hv-head");
function option(sel, value, text) {
  var o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
}
for (var l = 0; l < data.layers; l++) option(layerSel, l, l);
option(headSel, -1, "mean of heads");
for (var h = 0; h < data.heads; h++) option(headSel, h, h);
headSel.value = "0";
var spans = root.querySelectorAll(".gptlib-hv-tok"), current = n - 1;
function weight(layer, head, q, k) {
  var at = q * (q + 1) / 2 + k, first = head < 0 ? 0 : head, last = head < 0 ? data.heads : head + 1;
  var total = 0;
  for (var h = first; h < last; h++) total += levels[(layer * data.heads + h) * tri + at];
  return total / (255 * (last - first));
}
function paint(q) {
  current = q;
  var layer = +layerSel.value, head = +headSel.value, row = [], top = 0;
  for (var k = 0; k <= q; k++) { row.push(weight(layer, head, q, k)); top = Math.max(top, row[k]); }
  for (var k = 0; k < n; k++) {
    var w = k <= q ? row[k] : 0, shade = top > 0 ? w / top : 0, s = spans[k].style;
    s.background = w > 0 ? "rgba(31, 119, 180, " + shade.toFixed(3) + ")" : "";
    s.color = shade > 0.55 ? "white" : "";
    spans[k].title = k <= q ? "attention from the outlined token: " + w.toFixed(3) : "";
    spans[k].classList.toggle("gptlib-hv-on", k === q);
  }
}
spans.forEach(function (span, k) { span.addEventListener("mouseenter", function () { paint(k); }); });
layerSel.onchange = headSel.onchange = function () { paint(current); };
root.querySelector(".gptlib-hv-static").style.display = "none";
paint(current);
"""
_STYLE = """
.gptlib-hv{font-family:sans-serif;font-size:13px;line-height:1.9}
.gptlib-hv select{margin:0 8px 0 4px}
.gptlib-hv .gptlib-hv-tokens{margin:8px 0;font-family:monospace;font-size:14px}
.gptlib-hv .gptlib-hv-tok{padding:1px 2px;margin:0 1px;border-radius:3px;white-space:pre;
cursor:default;border:1px solid transparent}
.gptlib-hv .gptlib-hv-tok.gptlib-hv-on{border-color:#d62728}
.gptlib-hv .gptlib-hv-note{color:#666;font-size:12px}
"""


def head_view(
    attentions: Sequence[torch.Tensor] | torch.Tensor,
    tokens: Sequence[str],
    batch_index: int = 0,
    max_tokens: int = 64,
) -> HeadView:
    """An interactive view: pick a layer and a head, hover a token to see what it attends to.

    Weights are stored as 8-bit levels (steps of 1/255) for the last `max_tokens` tokens only,
    which keeps the view at a few tens of KB; the note under the view says when tokens were cut.
    The HTML holds its own style and script, loads nothing, and its element id is a hash of its
    content, so the same input always gives the same bytes.
    """
    weights = _stack(attentions, batch_index)
    n_layer, n_head, T, _ = weights.shape
    labels = _check_tokens(tokens, T)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    shown = min(T, max_tokens)
    weights, labels = weights[:, :, T - shown :, T - shown :], labels[T - shown :]
    rows, cols = np.tril_indices(shown)  # causal maps: only the lower triangle can be nonzero
    levels = np.clip(np.rint(weights[:, :, rows, cols] * 255), 0, 255).astype(np.uint8)
    note = (
        f"{shown} tokens, {n_layer} layers x {n_head} heads. Hover a token to see what it attends "
        "to: the most attended token is darkest; hover any token to read its weight."
    )
    if shown < T:
        note = (
            f"The last {shown} of {T} tokens (max_tokens={max_tokens}); their attention to the "
            f"{T - shown} earlier tokens is left out. " + note
        )
    data = {"n": shown, "layers": n_layer, "heads": n_head}
    data["weights"] = base64.b64encode(levels.tobytes()).decode("ascii")
    payload = json.dumps(data, separators=(",", ":"))
    spans = "".join(
        f'<span class="gptlib-hv-tok">{html.escape(_visible(t))}</span>'
        + ("<br>" if t == "\n" else "")
        for t in labels
    )
    view_id = "gptlib-hv-" + hashlib.sha256((spans + payload).encode("utf-8")).hexdigest()[:12]
    return HeadView(
        f'<div class="gptlib-hv" id="{view_id}"><style>{_STYLE.strip()}</style>'
        '<div class="gptlib-hv-controls">layer <select class="gptlib-hv-layer"></select>'
        'head <select class="gptlib-hv-head"></select></div>'
        f'<div class="gptlib-hv-tokens">{spans}</div>'
        f'<div class="gptlib-hv-note">{html.escape(note)}'
        '<span class="gptlib-hv-static"> This is a static copy: run the cell (or trust the '
        "notebook) to make it interactive.</span></div>"
        f'<script type="application/json" class="gptlib-hv-data">{payload}</script>'
        f"<script>(function (root) {{{_SCRIPT}}})(document.currentScript ? "
        f'document.currentScript.parentElement : document.getElementById("{view_id}"));</script>'
        "</div>",
        f"{shown} tokens, {n_layer} layers x {n_head} heads",
    )


def _visible(token: str) -> str:
    """A token as shown in running text: newlines and tabs get a mark, spaces stay spaces."""
    return token.replace("\n", "⏎").replace("\t", "⇥") or "∅"
