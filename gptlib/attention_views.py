"""Interactive attention views in self-contained HTML: the head view, the model view, the pattern view.

Taught in notebooks/15_attention_maps.ipynb.

- **Head view** (after Vig 2019's bertviz): the tokens in two columns, a line from each query
  (left) to every key it attends to (right), thicker and darker for larger weights, one colour
  per head; toggle heads, choose the layer, hover a token to isolate its lines and read their
  weights (click to pin).
- **Model view**: a thumbnail of every head of every layer; a click opens that head in the head
  view and the pattern view.
- **Pattern view**: one head's map as a heatmap with query and key labels, a colour scale, and
  the exact weight of the cell under the mouse.

`attention_view(model, text, tokenizer)` runs the model and draws all three; `head_view`,
`model_view` and `pattern_view` take the attention tensors of a forward pass you ran.

What the HTML relies on: one `<div>` holding a `<style>`, the weights as JSON in a
`<script type="application/json">`, and one inline `<script>` of plain JavaScript (shipped in
gptlib/assets/) that draws with the DOM, SVG and canvas. It names no URL, loads nothing and
probes nothing; it uses no element ids (two copies of one view cannot collide) and no random
numbers, so the same input gives the same bytes (nbval can compare them). Notebook front ends
run an inline script in an output they trust: JupyterLab and Notebook 7 for outputs made in the
session or in a trusted notebook, classic Notebook likewise, VS Code's notebook view, and
nbconvert's HTML export and the pages built from it. Where scripts are stripped (an untrusted
notebook, GitHub's preview) the view says so and asks to run the cell or trust the notebook.

Size: weights are stored as levels of 1/2047, so a shown weight is within 0.00025 of the
model's; only the lower triangle (causal attention) is stored, each row as runs of its non-zero
levels, as varints in base64. `max_tokens` keeps the first tokens of a longer text and
`max_bytes` bounds the page; the note in the view says what was left out, and `repr` gives the
size.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .interpret import stack_attentions
from .model import GPT
from .sampling import check_integer

Attentions = Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray

__all__ = [
    "MAX_BYTES",
    "MAX_TOKENS",
    "VIEWS",
    "AttentionView",
    "attention_view",
    "check_tokens",
    "head_view",
    "model_view",
    "pattern_view",
    "show_token",
    "stack_sequence",
    "token_strings",
]

RESOLUTION = 2047  # weights are stored as level / RESOLUTION: within 1/4094 of the true weight
MAX_TOKENS = 512  # the default cap: the first MAX_TOKENS tokens of a longer text are shown
HARD_MAX_TOKENS = 4096  # token positions are stored as 14-bit gaps; past this a view is unusable
MAX_BYTES = 4_000_000  # the default bound on a view's HTML
VIEWS = ("model", "head", "pattern")
_ASSETS = resources.files("gptlib") / "assets"


def show_token(token: str) -> str:
    """A token as a label a reader can see: spaces, newlines and tabs become visible marks."""
    return token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def _bytes_label(piece: bytes) -> str:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:  # part of a multi-byte character: show the bytes themselves
        return piece.decode("utf-8", errors="backslashreplace")


def token_strings(tokenizer: object, ids: Sequence[int]) -> list[str]:
    """One string per token id, as the tokenizer split the text: subword pieces, not characters.

    Taught in notebooks/15_attention_maps.ipynb. Works with gptlib's CharTokenizer and
    BPETokenizer, tiktoken encodings (`gptlib.tokenizers.get_encoding`) and Hugging Face
    tokenizers. A byte-level token that holds part of a multi-byte character is shown as its
    bytes (e.g. "\\xe4\\xbd").
    """
    ids = [int(i) for i in ids]
    if hasattr(tokenizer, "decode_tokens_bytes"):  # tiktoken, gptlib.bpe.BPETokenizer
        return [_bytes_label(piece) for piece in tokenizer.decode_tokens_bytes(ids)]
    if hasattr(tokenizer, "convert_ids_to_tokens") and hasattr(
        tokenizer, "convert_tokens_to_string"
    ):
        pieces = tokenizer.convert_ids_to_tokens(ids)
        return [tokenizer.convert_tokens_to_string([piece]) for piece in pieces]
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([i]) for i in ids]
    raise TypeError(f"{type(tokenizer).__name__} has no decode method; pass a tokenizer")


class AttentionView:
    """A self-contained interactive attention view; Jupyter shows it through `_repr_html_`."""

    def __init__(self, html_text: str, summary: str) -> None:
        self.html = html_text
        self.summary = summary

    def __repr__(self) -> str:
        return f"AttentionView({self.summary}, {len(self):,} bytes of HTML)"

    def _repr_html_(self) -> str:
        return self.html

    def __len__(self) -> int:
        return len(self.html.encode("utf-8"))

    def save(self, path: str | Path) -> Path:
        """Write the view as a complete HTML page that opens in any browser, offline."""
        path = Path(path)
        page = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>attention</title>'
        path.write_text(f"{page}</head><body>\n{self.html}\n</body></html>\n", encoding="utf-8")
        return path


def _varint(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of values below 2**14: one byte under 128, two bytes otherwise."""
    values = values.astype(np.int64)
    wide = values >= 128
    starts = np.concatenate([[0], np.cumsum(1 + wide)[:-1]]).astype(np.int64)
    out = np.zeros(len(values) + int(wide.sum()), dtype=np.uint8)
    out[starts] = (values & 127) | (wide * 128)
    out[starts[wide] + 1] = values[wide] >> 7
    return out.tobytes()


def _encode(weights: np.ndarray) -> tuple[dict[str, str], np.ndarray]:
    """Weights (L, H, n, n) as three base64 varint streams, and the bytes each query row costs.

    Rows are ordered layer, head, query; a row keeps its keys up to the query whose weight
    rounds to a level above 0, as runs of consecutive keys. "counts": runs per row; "runs":
    for each run, the keys skipped since the previous run ended (or since key 0) and its
    length; "levels": each kept weight times RESOLUTION, rounded.
    """
    L, H, n, _ = weights.shape
    levels = np.rint(np.clip(weights, 0.0, 1.0) * RESOLUTION).astype(np.int16)
    levels *= np.tril(np.ones((n, n), dtype=np.int16))
    flat = levels.reshape(L * H * n, n)
    edges = np.diff(np.pad(flat > 0, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    run_rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same order as the starts: row by row, left to right
    first = np.ones(len(run_rows), dtype=bool)
    first[1:] = run_rows[1:] != run_rows[:-1]
    previous_end = np.where(first, 0, np.concatenate([[0], ends[:-1]]))
    runs = np.stack([starts - previous_end, ends - starts], axis=1).ravel()
    values = flat[flat > 0]
    counts = np.bincount(run_rows, minlength=L * H * n)
    nbytes = lambda v: 1 + (v >= 128)  # noqa: E731  (a varint's length)
    row_bytes = (
        nbytes(counts)
        + np.bincount(run_rows, weights=nbytes(runs).reshape(-1, 2).sum(1), minlength=L * H * n)
        + np.bincount(np.nonzero(flat)[0], weights=nbytes(values), minlength=L * H * n)
    )
    streams = {
        name: base64.b64encode(_varint(stream)).decode("ascii")
        for name, stream in (("counts", counts), ("runs", runs), ("levels", values))
    }
    return streams, row_bytes.reshape(L * H, n).sum(axis=0)


def _library() -> tuple[str, str, str]:
    """The view's script and style, and a version tag (a hash of both)."""
    script = (_ASSETS / "attention_views.js").read_text(encoding="utf-8")
    style = (_ASSETS / "attention_views.css").read_text(encoding="utf-8")
    version = hashlib.sha256((script + style).encode("utf-8")).hexdigest()[:10]
    # Shipped without comments and indentation: the first block comment and whole-line comments
    script = script[script.index("*/") + 2 :] if script.lstrip().startswith("/*") else script
    lines = (line.strip() for line in script.splitlines())
    script = "\n".join(line for line in lines if line and not line.startswith("//"))
    style = " ".join(re.sub(r"/\*.*?\*/", "", style, flags=re.S).split())
    return script.replace("%VERSION%", version), style, version


def stack_sequence(attentions: Attentions, batch_index: int = 0) -> np.ndarray:
    """The attention of one sequence of a batch as a float32 (n_layer, n_head, T, T) array.

    Taught in notebooks/15_attention_maps.ipynb. `attentions` is anything
    `gptlib.interpret.stack_attentions` takes. Raises ValueError for None attentions (a forward
    pass without return_attention=True), for weights that are not finite and for a batch_index
    outside the batch, TypeError for a batch_index that is not an integer.
    """
    stacked = stack_attentions(attentions)  # (n_layer, B, n_head, T, T)
    batch = stacked.size(1)
    batch_index = check_integer("batch_index", batch_index, -(2**63), "an integer index")
    if not -batch <= batch_index < batch:
        raise ValueError(
            f"batch_index {batch_index!r} is out of range: the attentions hold a batch of {batch} "
            f"sequence(s), so use an index from 0 to {batch - 1}"
        )
    weights = stacked[:, batch_index]
    if not bool(torch.isfinite(weights).all()):
        raise ValueError(
            "the attention weights hold NaN or inf, which no picture can show: the model's "
            "weights (or its inputs) are not finite"
        )
    return weights.numpy()


def check_tokens(tokens: Sequence[str], length: int) -> list[str]:
    """The tokens as a list of strings, one per position.

    Raises TypeError for one string (its characters would become the labels) and for labels
    that are not text (a tensor of ids would be drawn as "tensor(5)"), ValueError unless there
    is exactly one label per position.
    """
    if isinstance(tokens, str) or not isinstance(tokens, Sequence | np.ndarray):
        raise TypeError(
            f"tokens must be a list of strings, one per position, got {type(tokens).__name__}; "
            "for one text use gptlib.attention_views.token_strings(tokenizer, ids)"
        )
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"tokens must be strings, got {bad[0]!r} ({type(bad[0]).__name__}); turn ids into "
            "text with gptlib.attention_views.token_strings(tokenizer, ids)"
        )
    tokens = list(tokens)
    if len(tokens) != length:
        raise ValueError(
            f"got {len(tokens)} tokens for attention over {length} positions; pass one string per "
            "position, e.g. gptlib.attention_views.token_strings(tokenizer, ids)"
        )
    return tokens


def _weights_of(
    attentions: Attentions, batch_index: int, layers: Sequence[int] | None
) -> tuple[np.ndarray, list[int]]:
    weights = stack_sequence(attentions, batch_index)
    allowed = f"a layer index from 0 to {weights.shape[0] - 1}"
    chosen = (
        list(range(weights.shape[0]))
        if layers is None
        else [check_integer("layers item", i, 0, allowed) for i in layers]
    )
    if not chosen or any(not 0 <= i < weights.shape[0] for i in chosen):
        raise ValueError(
            f"layers {layers!r} must be a non-empty list of layer indices from 0 to "
            f"{weights.shape[0] - 1}"
        )
    return weights[chosen], chosen


def _check_limits(max_tokens: int, max_bytes: int) -> None:
    for name, value in (("max_tokens", max_tokens), ("max_bytes", max_bytes)):
        check_integer(name, value, -(2**63), "an integer")  # the type; the ranges below
    if not 1 <= max_tokens <= HARD_MAX_TOKENS:
        raise ValueError(f"max_tokens must be from 1 to {HARD_MAX_TOKENS}, got {max_tokens}")
    if max_bytes < 25_000:
        raise ValueError(f"max_bytes must be at least 25,000 (about the script), got {max_bytes}")


def _build(
    weights: np.ndarray,
    layers: list[int],
    tokens: Sequence[str],
    views: Sequence[str],
    max_tokens: int,
    max_bytes: int,
    total: int | None = None,
    cut_by: str | None = None,
) -> AttentionView:
    """The view of `weights` (L, H, T, T) for tokens (T strings), as one self-contained <div>.

    `total` is the length of the text the weights are the start of; `cut_by` says why it was cut.
    """
    views = (views,) if isinstance(views, str) else tuple(views)  # one view named alone
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown:
        raise ValueError(f"views must name some of {VIEWS}, got {list(views)}")
    _check_limits(max_tokens, max_bytes)
    T = weights.shape[-1]
    tokens = check_tokens(tokens, T)
    total = T if total is None else total
    n = min(T, max_tokens)
    script, style, version = _library()
    streams, row_bytes = _encode(weights[:, :, :n, :n])
    labels = [show_token(t) for t in tokens[:n]]
    fixed = len(script) + len(style) + 2_000
    cost = fixed + np.cumsum(row_bytes * 4 / 3 + [len(s.encode()) * 6 + 3 for s in labels])
    if n < T:
        cut_by = f"max_tokens={max_tokens}; pass a larger max_tokens to see more"
    if cost[-1] > max_bytes:  # rows of a causal map do not change when later tokens go
        n = max(1, int(np.searchsorted(cost, max_bytes, side="right")))
        streams, _ = _encode(weights[:, :, :n, :n])
        labels = labels[:n]
        cut_by = f"max_bytes={max_bytes:,}; pass a larger max_bytes, or fewer layers, to see more"
    n_layer, n_head = len(layers), weights.shape[1]
    note = f"{n} tokens, {n_layer} layer(s) x {n_head} heads."
    if n < total:
        note = (
            f"The first {n} of {total} tokens ({cut_by}). A causal model's attention over them is "
            "exactly what it would be without the rest. " + note
        )
    note += " Weights are shown to 4 decimals, within 0.00025 of the model's."
    payload = {"v": 1, "n": n, "layers": layers, "heads": n_head, "parts": list(views)}
    payload |= {"tokens": labels, "res": RESOLUTION, **streams}
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    digest = hashlib.sha256((data + version).encode("utf-8")).hexdigest()[:12]
    names = " + ".join(f"{v} view" for v in views)
    fallback = (
        f"This interactive {names} has not been drawn: its script did not run here (an untrusted "
        "notebook, or a page that strips scripts). Run the cell, or trust the notebook, to see it."
    )
    page = (
        f'<div class="gptlib-av" data-lib="{version}" data-view="{digest}">'
        f"<style>{style}</style>"
        f'<div class="gav-note">{html.escape(note)}</div>'
        f'<div class="gav-fallback">{html.escape(fallback)}</div>'
        '<div class="gav-body"></div>'
        f'<script type="application/json" class="gav-data">{data}</script>'
        f"<script>{script}</script></div>"
    )
    return AttentionView(page, f"{names}, {n} tokens, {n_layer} layers x {n_head} heads")


def head_view(
    attentions: Attentions,
    tokens: Sequence[str],
    batch_index: int = 0,
    max_tokens: int = MAX_TOKENS,
    layers: Sequence[int] | None = None,
    max_bytes: int = MAX_BYTES,
) -> AttentionView:
    """The head view of attention weights: lines from each query to the keys it attends to.

    Taught in notebooks/15_attention_maps.ipynb. `attentions` is what
    `model(idx, return_attention=True).attentions` holds (n_layer tensors (B, n_head, T, T));
    `tokens` one string per position; `batch_index` picks the sequence; `layers` a subset of
    layers (all by default). Raises ValueError for None attentions (a forward pass without
    return_attention=True), a batch_index out of range, or a wrong number of tokens.
    """
    weights, chosen = _weights_of(attentions, batch_index, layers)
    return _build(weights, chosen, tokens, ("head",), max_tokens, max_bytes)


def model_view(
    attentions: Attentions,
    tokens: Sequence[str],
    batch_index: int = 0,
    max_tokens: int = MAX_TOKENS,
    layers: Sequence[int] | None = None,
    max_bytes: int = MAX_BYTES,
) -> AttentionView:
    """The model view: a thumbnail per layer and head; clicking one opens it in a head view.

    Taught in notebooks/15_attention_maps.ipynb. Arguments and errors as in `head_view`.
    """
    weights, chosen = _weights_of(attentions, batch_index, layers)
    return _build(weights, chosen, tokens, ("model", "head"), max_tokens, max_bytes)


def pattern_view(
    attentions: Attentions,
    tokens: Sequence[str],
    batch_index: int = 0,
    max_tokens: int = MAX_TOKENS,
    layers: Sequence[int] | None = None,
    max_bytes: int = MAX_BYTES,
) -> AttentionView:
    """The pattern view: one head's map as a heatmap; hover a cell for its exact weight.

    Taught in notebooks/15_attention_maps.ipynb. Choose the layer and head in the view.
    Arguments and errors as in `head_view`.
    """
    weights, chosen = _weights_of(attentions, batch_index, layers)
    return _build(weights, chosen, tokens, ("pattern",), max_tokens, max_bytes)


@torch.no_grad()
def attention_view(
    model: GPT,
    text: str,
    tokenizer: object,
    views: Sequence[str] = VIEWS,
    max_tokens: int = MAX_TOKENS,
    layers: Sequence[int] | None = None,
    max_bytes: int = MAX_BYTES,
) -> AttentionView:
    """Run `model` on `text` and draw its attention: model view, head view and pattern view.

    Taught in notebooks/15_attention_maps.ipynb. Tokenizes with `tokenizer` (gptlib, tiktoken
    or Hugging Face), keeps the first `max_tokens` tokens (and no more than a model with learned
    positions can read), runs one forward pass with return_attention=True in eval mode, and
    returns the views named in `views` (linked: a thumbnail opens its head in the others).
    Works with any `GPT`, e.g. one loaded with `GPT.from_pretrained`. Raises ValueError for an
    empty text and the errors of `head_view`.
    """
    _check_limits(max_tokens, max_bytes)
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(
            f"tokenizer must have encode(text) (gptlib, tiktoken or Hugging Face), got "
            f"{type(tokenizer).__name__}"
        )
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError("the text is empty after tokenization; pass some text to look at")
    cut_by = f"max_tokens={max_tokens}; pass a larger max_tokens to see more"
    limit = max_tokens
    if model.config.position == "learned" and model.config.block_size < max_tokens:
        limit = model.config.block_size
        cut_by = f"the model's learned positions stop at block_size={limit}"
    shown = ids[:limit]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model(torch.tensor([shown], device=device), return_attention=True)
    finally:
        model.train(was_training)
    weights, chosen = _weights_of(out.attentions, 0, layers)
    labels = token_strings(tokenizer, shown)
    views = (views,) if isinstance(views, str) else tuple(views)
    return _build(weights, chosen, labels, views, limit, max_bytes, len(ids), cut_by)
