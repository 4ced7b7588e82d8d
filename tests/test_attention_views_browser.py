"""The attention views in a real browser: headless Chromium with the network shut (tests/browser.py).

Each test saves a view of a small model's attention to a file, opens it, and checks what a
reader sees and does: it renders, lines and thumbnails are drawn, clicking a thumbnail and
toggling a head change what is drawn, hovering shows the model's weight to 1e-3, nothing is
requested from the network and nothing is logged as an error. They skip, with an install hint,
on a machine without Chromium.
"""

import re

import pytest
import torch
from test_attention_views import TEXT, tiny_model

from gptlib.attention_views import attention_view, head_view, model_view
from gptlib.tokenizers import CharTokenizer

TOLERANCE = 1e-3


def peaked_model(seed: int):
    """A small random model whose heads attend sharply, as trained ones do, not near-uniformly."""
    model = tiny_model(seed=seed, position="rotary")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.mul_(6.0)
    return model


@pytest.fixture(scope="module")
def run():
    """A 2-layer, 3-head model, its tokenizer, and its attention on TEXT: (L, H, T, T)."""
    model, tokenizer = peaked_model(seed=3), CharTokenizer.from_text(TEXT)
    with torch.no_grad():
        out = model(torch.tensor([tokenizer.encode(TEXT)]), return_attention=True)
    return model, tokenizer, torch.stack(out.attentions)[:, 0]


def _open(browser_page, tmp_path, view, name="view.html"):
    page = browser_page.open(view.save(tmp_path / name))
    page.wait_for_selector(".gptlib-av[data-ready]")
    return page


def _lines(page, root=".gptlib-av") -> dict[str, int]:
    """Segments drawn in the head view, per head."""
    counts: dict[str, int] = {}
    for path in page.locator(f"{root} svg.gav-lines path").all():
        head = path.get_attribute("data-head")
        counts[head] = counts.get(head, 0) + path.get_attribute("d").count("M")
    return counts


def _clean(browser_page) -> None:
    assert browser_page.blocked == [], f"requests left the page: {browser_page.blocked}"
    assert browser_page.console_errors == [], browser_page.console_errors


def test_the_views_render_with_lines_and_thumbnails(browser_page, tmp_path, run) -> None:
    model, tokenizer, weights = run
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, tokenizer))
    assert page.locator("canvas.gav-thumb").count() == 2 * 3
    assert page.locator(".gav-left .gav-tok").count() == len(TEXT)
    assert page.locator(".gav-left .gav-tok").nth(4).inner_text() == "c"
    assert set(_lines(page)) == {"0", "1", "2"}, "every head draws lines at first"
    assert page.locator("canvas.gav-pattern").count() == 1
    assert not page.locator(".gav-fallback").is_visible()
    _clean(browser_page)


def test_toggling_a_head_removes_and_restores_its_lines(browser_page, tmp_path, run) -> None:
    model, tokenizer, _ = run
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, tokenizer))
    before = _lines(page)
    page.locator('button.gav-toggle[data-head="1"]').click()
    after = _lines(page)
    assert "1" not in after and after == {h: n for h, n in before.items() if h != "1"}
    assert page.locator('button.gav-toggle[data-head="1"]').get_attribute("aria-pressed") == "false"
    page.locator('button.gav-toggle[data-head="1"]').click()
    assert _lines(page) == before
    page.locator("button.gav-none").click()
    assert _lines(page) == {}
    _clean(browser_page)


def test_clicking_a_thumbnail_opens_that_head(browser_page, tmp_path, run) -> None:
    model, tokenizer, weights = run
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, tokenizer))
    layer0 = _lines(page)
    page.locator('canvas.gav-thumb[data-layer="1"][data-head="2"]').click()
    assert page.locator("select.gav-layer").input_value() == "1"
    assert page.locator("select.gav-pattern-head").input_value() == "2"
    assert set(_lines(page)) == {"2"} and _lines(page) != {"2": layer0["2"]}
    assert page.locator("canvas.gav-thumb.gav-selected").count() == 1
    expected = int((weights[1, 2] >= 0.01).sum())  # the overview draws weights >= 0.01
    assert page.locator("svg.gav-lines").get_attribute("data-lines") == str(expected)
    _clean(browser_page)


def _pattern_weight(page, q: int, k: int) -> tuple[str, float | None]:
    canvas = page.locator("canvas.gav-pattern")
    canvas.scroll_into_view_if_needed()
    cell = page.evaluate("document.querySelector('.gptlib-av').gptlibView.cell")
    margin = page.evaluate("document.querySelector('.gptlib-av').gptlibView.margin")
    canvas.hover(position={"x": margin + (k + 0.5) * cell, "y": margin + (q + 0.5) * cell})
    text = page.locator(".gav-readout").last.inner_text()
    number = re.search(r": ([0-9.]+)$", text)
    return text, float(number.group(1)) if number else None


def test_hovering_the_pattern_shows_the_models_weight(browser_page, tmp_path, run) -> None:
    model, tokenizer, weights = run
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, tokenizer))
    page.locator("select.gav-layer").select_option("1")
    page.locator("select.gav-pattern-head").select_option("2")
    T = weights.shape[-1]
    cells = [(T - 1, int(weights[1, 2, T - 1].argmax())), (10, 3), (5, 5), (30, 0), (44, 20)]
    for q, k in cells:
        text, shown = _pattern_weight(page, q, k)
        assert f"layer 1, head 2: query {q} " in text, text
        assert shown == pytest.approx(float(weights[1, 2, q, k]), abs=TOLERANCE), text
    text, shown = _pattern_weight(page, 3, 7)
    assert shown is None and text.endswith("masked (a future token)")
    _clean(browser_page)


def test_hovering_a_token_isolates_its_lines_and_shows_its_weights(
    browser_page, tmp_path, run
) -> None:
    model, tokenizer, weights = run
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, tokenizer))
    q = 40
    page.locator(".gav-left .gav-tok").nth(q).hover()
    assert page.locator(".gav-right .gav-badge").count() > 0
    # every badge sits beside its key, and equals the model's weight from the hovered query
    for k, token in enumerate(page.locator(".gav-right .gav-tok").all()):
        for badge in token.locator(".gav-badge").all():
            head = int(badge.get_attribute("data-head"))
            expected = float(weights[0, head, q, k])
            assert float(badge.inner_text()) == pytest.approx(expected, abs=TOLERANCE)
    segments = sum(_lines(page).values())
    assert segments == int((weights[0, :, q] >= 0.005).sum())
    page.mouse.move(1100, 5)  # leave the columns: every line comes back
    assert sum(_lines(page).values()) > segments
    _clean(browser_page)


def test_views_on_one_page_do_not_interfere(browser_page, tmp_path, run) -> None:
    model, tokenizer, _ = run
    first = attention_view(model, TEXT, tokenizer)
    second = attention_view(peaked_model(seed=4), TEXT, tokenizer)
    page_html = first.html + second.html + first.html  # the same view twice, as in a notebook
    page = browser_page.open(
        f'<html><head><meta charset="utf-8"></head><body>{page_html}</body></html>'
    )
    page.wait_for_function("document.querySelectorAll('.gptlib-av[data-ready]').length === 3")
    roots = ".gptlib-av:nth-of-type({})"
    before = [_lines(page, roots.format(i)) for i in (1, 2, 3)]
    assert before[0] == before[2] and before[0] != before[1]
    page.locator(f"{roots.format(2)} canvas.gav-thumb").nth(4).click()
    after = [_lines(page, roots.format(i)) for i in (1, 2, 3)]
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    _clean(browser_page)


def test_a_long_text_renders(browser_page, tmp_path) -> None:
    model = peaked_model(seed=5)
    text = (TEXT + " ") * 8  # 376 characters: the overview draws weights >= 0.05
    tokenizer = CharTokenizer.from_text(text)
    page = _open(browser_page, tmp_path, attention_view(model, text, tokenizer))
    assert page.locator(".gav-left .gav-tok").count() == len(text)
    assert sum(_lines(page).values()) > 0
    _clean(browser_page)


def test_without_scripts_the_view_says_how_to_draw_it(chromium_browser, tmp_path, run) -> None:
    model, tokenizer, _ = run
    path = model_view(*_attentions_and_tokens(model, tokenizer)).save(tmp_path / "static.html")
    context = chromium_browser.new_context(java_script_enabled=False)
    requests = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.goto(path.resolve().as_uri())
    assert page.locator(".gav-fallback").is_visible()
    assert "Run the cell, or trust the notebook" in page.locator(".gav-fallback").inner_text()
    assert [url for url in requests if not url.startswith("file:")] == []
    context.close()


def _attentions_and_tokens(model, tokenizer):
    ids = tokenizer.encode(TEXT)
    with torch.no_grad():
        out = model(torch.tensor([ids]), return_attention=True)
    return out.attentions, [tokenizer.decode([i]) for i in ids]


def test_head_view_alone_has_no_thumbnails_or_pattern(browser_page, tmp_path, run) -> None:
    model, tokenizer, _ = run
    page = _open(browser_page, tmp_path, head_view(*_attentions_and_tokens(model, tokenizer)))
    assert page.locator("canvas.gav-thumb").count() == 0
    assert page.locator("canvas.gav-pattern").count() == 0
    assert sum(_lines(page).values()) > 0
    _clean(browser_page)


# How front ends insert an output: classic Notebook (jQuery) evaluates the scripts of an HTML
# output before the output is attached to the page; JupyterLab re-creates its script elements,
# which run once the output is attached; both are done here to a detached element.
INSERT_LIKE = {
    "classic Notebook": """html => {
        const host = document.createElement('div');
        host.innerHTML = html;
        for (const s of host.querySelectorAll('script')) {
            if (!s.type) (0, eval)(s.textContent);
        }
        setTimeout(() => document.body.appendChild(host), 50);
    }""",
    "JupyterLab": """html => {
        const host = document.createElement('div');
        host.innerHTML = html;
        for (const old of host.querySelectorAll('script')) {
            const s = document.createElement('script');
            for (const attribute of old.attributes) s.setAttribute(attribute.name, attribute.value);
            s.textContent = old.textContent;
            old.replaceWith(s);
        }
        setTimeout(() => document.body.appendChild(host), 50);
    }""",
}


@pytest.mark.parametrize("front_end", sorted(INSERT_LIKE))
def test_the_view_draws_however_the_front_end_inserts_it(browser_page, run, front_end) -> None:
    model, tokenizer, _ = run
    page = browser_page.open('<html><head><meta charset="utf-8"></head><body></body></html>')
    page.evaluate(INSERT_LIKE[front_end], attention_view(model, TEXT, tokenizer).html)
    page.wait_for_selector(".gptlib-av[data-ready]", timeout=5000)
    assert page.locator("canvas.gav-thumb").count() == 6
    assert sum(_lines(page).values()) > 0
    _clean(browser_page)


def test_every_head_gets_its_own_colour(browser_page, tmp_path) -> None:
    model = tiny_model(seed=6, position="rotary", n_layer=1, n_head=12)  # GPT-2 has 12 heads
    page = _open(browser_page, tmp_path, attention_view(model, TEXT, CharTokenizer.from_text(TEXT)))
    toggles = page.locator("button.gav-toggle").all()
    colours = {t.evaluate("b => getComputedStyle(b).borderLeftColor") for t in toggles}
    assert len(toggles) == 12 and len(colours) == 12
    _clean(browser_page)


def test_the_view_draws_in_a_notebook_exported_by_nbconvert(browser_page, tmp_path, run) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    model, tokenizer, _ = run
    view = attention_view(model, TEXT, tokenizer)
    cell = nbformat.v4.new_code_cell("attention_view(model, text, tokenizer)", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output(
            "execute_result", {"text/html": view.html, "text/plain": repr(view)}, execution_count=1
        )
    ]
    page_html, _ = nbconvert.HTMLExporter().from_notebook_node(
        nbformat.v4.new_notebook(cells=[cell])
    )
    path = tmp_path / "exported.html"
    path.write_text(page_html, encoding="utf-8")
    page = browser_page.open(path)
    page.wait_for_selector(".gptlib-av[data-ready]")
    assert page.locator("canvas.gav-thumb").count() == 6
    # nbconvert's own template asks a CDN for require.js and MathJax; the view asks for nothing
    assert all(("require" in url or "mathjax" in url) for url in browser_page.blocked)
    assert [e for e in browser_page.console_errors if "Failed to load resource" not in e] == []
