"""gptlib.attention_views without a browser: the HTML is offline, deterministic and bounded, its
data holds the model's weights, and bad input gets a clear error. test_attention_views_browser.py
drives the same views in Chromium."""

import base64
import html
import json
import re
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.attention_views import (
    RESOLUTION,
    AttentionView,
    attention_view,
    head_view,
    model_view,
    pattern_view,
    token_strings,
)
from gptlib.bpe import BPETokenizer
from gptlib.tokenizers import CharTokenizer, get_encoding

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the cat sat on the mat; the cat sat on the hat"


def tiny_model(seed: int = 0, position: str = "learned", n_layer: int = 2, n_head: int = 3) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=n_layer, n_head=n_head, n_embd=12 * n_head, block_size=64,
        vocab_size=40, position=position,
    )  # fmt: skip
    return GPT(config).eval()


def _attentions(T: int = 20, seed: int = 0, batch: int = 2):
    model = tiny_model(seed)
    idx = torch.randint(0, 40, (batch, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = model(idx, return_attention=True)
    return out.attentions, [chr(ord("a") + i % 26) for i in idx[0].tolist()]


def payload(page: str) -> dict:
    match = re.search(r'<script type="application/json" class="gav-data">(.*?)</script>', page)
    return json.loads(match.group(1))


def _varints(b64: str) -> list[int]:
    data, values, at = base64.b64decode(b64), [], 0
    while at < len(data):
        value = data[at] & 127
        if data[at] & 128:
            at += 1
            value |= data[at] << 7
        values.append(value)
        at += 1
    return values


def decode(data: dict) -> np.ndarray:
    """The (n_layer, n_head, n, n) weights a view holds, read independently of its script."""
    n, rows = data["n"], len(data["layers"]) * data["heads"] * data["n"]
    counts, runs, levels = (_varints(data[name]) for name in ("counts", "runs", "levels"))
    assert len(counts) == rows
    weights, run, entry = np.zeros((rows, n)), 0, 0
    for row, count in enumerate(counts):
        key = 0
        for _ in range(count):
            key += runs[2 * run]
            for _ in range(runs[2 * run + 1]):
                weights[row, key] = levels[entry] / data["res"]
                key, entry = key + 1, entry + 1
            run += 1
    assert entry == len(levels) and 2 * run == len(runs)
    return weights.reshape(len(data["layers"]), data["heads"], n, n)


@pytest.mark.parametrize("make", [head_view, model_view, pattern_view])
def test_a_view_names_no_url_and_loads_nothing(make) -> None:
    attentions, tokens = _attentions()
    lowered = make(attentions, tokens).html.lower()
    forbidden = ("http:", "https:", "//cdn", "src=", "href=", "url(", "@import", "import(",
                 "require(", "fetch(", "xmlhttprequest", "websocket", "sendbeacon", " id=")  # fmt: skip
    for word in forbidden:
        assert word not in lowered, f"the view contains {word!r}"
    assert lowered.count("<script") == 2 and lowered.count("<style>") == 1


def test_the_same_input_gives_the_same_bytes_and_another_input_another_view() -> None:
    attentions, tokens = _attentions()
    first = model_view(attentions, tokens).html
    assert first == model_view(attentions, tokens).html
    (digest,) = re.findall(r'data-view="([0-9a-f]{12})"', first)
    other, _ = _attentions(seed=1)
    for page in (model_view(other, tokens).html, model_view(attentions, tokens[::-1]).html):
        assert digest not in page


def test_the_view_holds_every_weight_to_within_half_a_level() -> None:
    attentions, tokens = _attentions(T=24)
    data = payload(head_view(attentions, tokens, batch_index=1).html)
    assert (data["n"], data["layers"], data["heads"], data["res"]) == (24, [0, 1], 3, RESOLUTION)
    expected = torch.stack([a[1] for a in attentions]).numpy()
    assert np.abs(decode(data) - expected).max() <= 0.5 / RESOLUTION + 1e-7


def test_layers_picks_a_subset() -> None:
    attentions, tokens = _attentions()
    data = payload(pattern_view(attentions, tokens, layers=[1]).html)
    assert data["layers"] == [1]
    assert np.abs(decode(data)[0] - attentions[1][0].numpy()).max() <= 0.5 / RESOLUTION + 1e-7
    with pytest.raises(ValueError, match="layer indices from 0 to 1"):
        head_view(attentions, tokens, layers=[2])


def test_a_long_text_keeps_its_first_tokens_and_says_so() -> None:
    attentions, tokens = _attentions(T=60)
    view = model_view(attentions, tokens, max_tokens=40)
    data = payload(view.html)
    assert data["n"] == 40 and data["tokens"] == tokens[:40]
    assert "The first 40 of 60 tokens (max_tokens=40; pass a larger max_tokens" in view.html
    # a causal map's first rows are the same with or without the later tokens
    assert np.abs(decode(data) - np.stack([a[0, :, :40, :40] for a in attentions])).max() < 3e-4
    with pytest.raises(ValueError, match="max_tokens must be from 1"):
        head_view(attentions, tokens, max_tokens=0)


def test_max_bytes_bounds_the_page_and_says_so() -> None:
    attentions, tokens = _attentions(T=64)
    full = head_view(attentions, tokens)
    cut = head_view(attentions, tokens, max_bytes=30_000)
    assert len(cut) <= 30_000 < len(full)
    assert 10 < payload(cut.html)["n"] < 64
    assert "max_bytes=30,000; pass a larger max_bytes" in cut.html
    with pytest.raises(ValueError, match="max_bytes must be at least"):
        head_view(attentions, tokens, max_bytes=1_000)


def test_repr_states_what_the_view_shows_and_its_size() -> None:
    attentions, tokens = _attentions()
    view = model_view(attentions, tokens)
    assert repr(view) == (
        f"AttentionView(model view + head view, 20 tokens, 2 layers x 3 heads, "
        f"{len(view.html.encode()):,} bytes of HTML)"
    )
    assert view._repr_html_() == view.html


def test_tokens_cannot_break_out_of_the_page() -> None:
    attentions, _ = _attentions(T=4)
    tokens = ["</script><script>alert(1)</script>", "<!--", "&amp;", "\n"]
    view = head_view(attentions, tokens)
    assert view.html.count("<script") == 2 and "alert(1)</script>" not in view.html
    assert payload(view.html)["tokens"] == [
        "</script><script>alert(1)</script>", "<!--", "&amp;", "⏎",
    ]  # fmt: skip


def test_bad_input_gets_a_clear_error_at_the_call() -> None:
    attentions, tokens = _attentions()
    for make in (head_view, model_view, pattern_view):
        with pytest.raises(ValueError, match=r"return_attention=True"):
            make(None, tokens)
        with pytest.raises(ValueError, match=r"batch_index 2 is out of range.*0 to 1"):
            make(attentions, tokens, batch_index=2)
        with pytest.raises(ValueError, match="got 19 tokens for attention over 20 positions"):
            make(attentions, tokens[:-1])
    with torch.no_grad():
        out = tiny_model()(torch.zeros(1, 5, dtype=torch.long))  # no return_attention=True
    with pytest.raises(ValueError, match="forward pass ran without return_attention=True"):
        head_view(out.attentions, list("abcde"))


def test_one_call_runs_the_model_on_a_text() -> None:
    model, tokenizer = tiny_model(position="rotary"), CharTokenizer.from_text(TEXT)
    view = attention_view(model, TEXT, tokenizer)
    assert isinstance(view, AttentionView)
    data = payload(view.html)
    assert data["parts"] == ["model", "head", "pattern"] and data["tokens"][:4] == list("the␣")
    ids = torch.tensor([tokenizer.encode(TEXT)])
    with torch.no_grad():
        expected = torch.stack(model(ids, return_attention=True).attentions)[:, 0].numpy()
    assert np.abs(decode(data) - expected).max() <= 0.5 / RESOLUTION + 1e-7
    only = payload(attention_view(model, TEXT, tokenizer, views=("pattern",)).html)
    assert only["parts"] == ["pattern"]
    with pytest.raises(ValueError, match="views must name some of"):
        attention_view(model, TEXT, tokenizer, views=("neuron",))
    with pytest.raises(ValueError, match="text is empty"):
        attention_view(model, "", tokenizer)


def test_one_call_stops_where_learned_positions_stop() -> None:
    model, tokenizer = tiny_model(position="learned"), CharTokenizer.from_text(TEXT)
    view = attention_view(model, TEXT * 2, tokenizer)
    assert payload(view.html)["n"] == 64
    note = html.unescape(view.html)
    assert f"The first 64 of {2 * len(TEXT)} tokens (the model's learned positions" in note
    assert model.training is False


def test_token_strings_show_subword_pieces() -> None:
    gpt2 = get_encoding("gpt2")
    ids = gpt2.encode("héllo 你好 world")
    pieces = token_strings(gpt2, ids)
    assert pieces[-1] == " world" and "é" in pieces
    assert any(p.startswith("\\x") for p in pieces)  # part of a multi-byte character
    bpe = BPETokenizer.train("low lower lowest " * 20, vocab_size=262)
    assert "".join(token_strings(bpe, bpe.encode("lowest low"))) == "lowest low"
    assert token_strings(CharTokenizer.from_text("ab"), [0, 1]) == ["a", "b"]
    with pytest.raises(TypeError, match="no decode method"):
        token_strings(object(), [1])


def test_views_work_for_a_hugging_face_gpt2_loaded_from_disk(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path)
    view = attention_view(model, "Attention maps of a GPT-2 checkpoint", get_encoding("gpt2"))
    data = payload(view.html)
    assert data["tokens"][:2] == ["Att", "ention"] and data["heads"] == 2


def test_the_script_and_style_ship_with_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gptlib"]
    assets = sorted((ROOT / "gptlib" / "assets").iterdir())
    assert assets
    for path in assets:
        relative = path.relative_to(ROOT / "gptlib").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), f"{relative} not shipped"


def _nan_attentions():
    attentions, tokens = _attentions(T=6)
    broken = [a.clone() for a in attentions]
    broken[0][0, 0, 3, 1] = float("nan")
    return broken, tokens


# (what a new user passes, error type, what the message must say); every one was drawn or
# raised a torch/NumPy error before.
BAD_VIEW_CALLS = {
    "one string as tokens": (lambda a, t: head_view(a, "".join(t)), TypeError, "list of strings"),
    "a tensor of ids as tokens": (
        lambda a, t: head_view(a, torch.arange(len(t))), TypeError, "token_strings",
    ),
    "ints as tokens": (lambda a, t: model_view(a, list(range(len(t)))), TypeError, "strings"),
    "a float batch_index": (lambda a, t: head_view(a, t, batch_index=0.5), TypeError, "batch_index"),
    "a bool batch_index": (lambda a, t: head_view(a, t, batch_index=True), TypeError, "batch_index"),
    "a float layer": (lambda a, t: pattern_view(a, t, layers=[0.7]), TypeError, "layer"),
    "a layer out of range": (lambda a, t: head_view(a, t, layers=[5]), ValueError, "layer"),
    "no layers": (lambda a, t: head_view(a, t, layers=[]), ValueError, "non-empty"),
    "a float max_tokens": (lambda a, t: head_view(a, t, max_tokens=2.5), TypeError, "max_tokens"),
    "a text max_bytes": (lambda a, t: head_view(a, t, max_bytes="1e6"), TypeError, "max_bytes"),
    "NaN weights": (lambda a, t: head_view(*_nan_attentions()), ValueError, "NaN or inf"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_VIEW_CALLS, ids=str)
def test_every_bad_view_argument_is_named(case: str) -> None:
    call, error, message = BAD_VIEW_CALLS[case]
    attentions, tokens = _attentions(T=6)
    with pytest.raises(error, match=message):
        call(attentions, tokens)


def test_one_call_names_a_missing_tokenizer_and_takes_one_view_by_name() -> None:
    model, tokenizer = tiny_model(), CharTokenizer.from_text(TEXT)
    with pytest.raises(TypeError, match="tokenizer must have encode"):
        attention_view(model, TEXT, None)
    assert payload(attention_view(model, "the cat", tokenizer, views="head").html)["parts"] == [
        "head"
    ]
    with pytest.raises(ValueError, match="views must name some of"):
        attention_view(model, TEXT, tokenizer, views="heads")
