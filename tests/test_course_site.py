"""The book's website and slides, built once, read as files and in headless Chromium offline.

`python -m course.site` builds the site (and the slides into it) from the stored notebooks;
the browser tests open pages with every non-local request refused (tests/browser.py) and check
what a reader sees: rendered maths with no raw TeX left, the plots, the interactive attention
views whose scripts ran, a working search, and slides that open from disk.
"""

import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

from course.chapters import discover_chapters, format_seconds
from course.site import build_site

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = discover_chapters(ROOT / "notebooks")
# Console messages that a correct offline page still prints: MathJax 2 probes font loading
# with a font at about:blank, and the theme notes that no light/dark choice is stored yet.
HARMLESS_CONSOLE = ("about:blank", "net::ERR_FAILED", "invalid theme mode")
# MathJax 2 asks for a TeX web font for some letters (\mathcal) before it falls back to the
# STIX-Web fonts it has; jupyter-server-mathjax does not ship the TeX fonts.
MATHJAX_FONT_PROBE = "/_static/mathjax/fonts/HTML-CSS/TeX/"
# What a browser fetches by itself when it opens a page (an <a href> is only a link).
LOADED = (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"))
LOADED_LINKS = {"stylesheet", "preload", "icon", "modulepreload"}
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$[^$\n]{0,80}[\\^_{}][^$\n]{0,80}\$")
MATHJAX_DONE = "() => new Promise(resolve => MathJax.Hub.Queue(() => resolve(true)))"
ARTICLE_TEXT = """() => {
  const clone = (document.querySelector("article") || document.body).cloneNode(true);
  const skip = "pre, code, script, style, .cell_output, .MathJax, .MathJax_Display, " +
               ".MathJax_Preview, .MJX_Assistive_MathML";
  clone.querySelectorAll(skip).forEach(element => element.remove());
  return clone.textContent;
}"""


# Sphinx 9 announces API changes that its extensions have not caught up with yet.
pytestmark = pytest.mark.filterwarnings("ignore:.*Check CHANGES for Sphinx API modifications")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The website with its slides, built once for the whole test session."""
    out = tmp_path_factory.mktemp("course") / "site"
    build_site(out, ROOT / "notebooks", slides=True)
    return out


def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _letters(text: str) -> str:
    """Letters and digits only: compares Markdown with rendered text (quotes, code, spacing)."""
    return re.sub(r"\W+", "", text).lower()


def _stored_outputs(chapter) -> list:
    nb = nbformat.read(chapter.path, as_version=4)
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def _script_views(chapter) -> list[str]:
    """A CSS selector for each stored HTML output that carries its own <script> (a view).

    The selector names the output's first element by its id, or else by its tag, classes
    and data-* attributes, so it finds the view with or without JavaScript.
    """
    selectors = []
    for output in _stored_outputs(chapter):
        html = output.get("data", {}).get("text/html", "")
        html = "".join(html) if isinstance(html, list) else html
        if "<script" not in html:
            continue
        root = next(
            tag
            for tag in BeautifulSoup(html, "html.parser").find_all(True)
            if tag.name not in ("style", "script")
        )
        if root.get("id"):
            selectors.append(f"#{root['id']}")
            continue
        classes = "".join(f".{name}" for name in root.get("class", []))
        data = "".join(
            f'[{key}="{value}"]' for key, value in root.attrs.items() if key.startswith("data-")
        )
        selectors.append(f"{root.name}{classes}{data}")
    return selectors


def _remote(url: str) -> bool:
    return not url.startswith(("file:", "data:", "blob:", "about:"))


def _wait_for_maths(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.isReady", timeout=60_000)
    page.evaluate(MATHJAX_DONE)


def _record_failures(browser_page) -> list[str]:
    """Local files that pages of this context asked for and could not get."""
    failed: list[str] = []
    browser_page.context.on(
        "requestfailed",
        lambda request: request.url.startswith("file:") and failed.append(request.url),
    )
    return failed


def _unexpected(messages: list[str], failed: list[str] = ()) -> list[str]:
    """Console errors other than the harmless ones; a missing file counts unless it is a
    MathJax font probe."""
    harmless = HARMLESS_CONSOLE
    if failed and all(MATHJAX_FONT_PROBE in url for url in failed):
        harmless = (*harmless, "ERR_FILE_NOT_FOUND")
    return [m for m in messages if not any(text in m for text in harmless)]


# --- the built files ---------------------------------------------------------------------


def test_the_site_has_every_chapter_in_reading_order_and_the_teacher_pages(site) -> None:
    sidebar = _soup(site / "index.html").select("nav.bd-links a.reference.internal")
    pages = [link["href"] for link in sidebar]
    chapter_pages = [f"{chapter.name}.html" for chapter in CHAPTERS]
    assert [page for page in pages if page in chapter_pages] == chapter_pages
    for page in ("instructor_guide.html", "references.html", "search.html", "searchindex.js"):
        assert (site / page).is_file(), f"{page} was not built"
    assert "instructor_guide.html" in pages and "references.html" in pages
    guide = _soup(site / "instructor_guide.html").get_text(" ")
    assert "Syllabus" in guide and "Chapter by chapter" in guide


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda chapter: chapter.path.name)
def test_a_chapter_page_shows_run_time_objectives_plots_and_views(site, chapter) -> None:
    page = _soup(site / f"{chapter.name}.html")
    text = " ".join(page.get_text(" ").split())
    assert f"Run time: {format_seconds(chapter.run_seconds)}" in text
    for objective in chapter.objectives:
        assert _letters(objective) in _letters(text), f"objective {objective!r} is not on the page"
    plots = {"image/png", "image/jpeg", "image/svg+xml"}
    images = [o for o in _stored_outputs(chapter) if plots & set(o.get("data", {}))]
    assert len(page.select("article img")) >= len(images), "a stored plot is missing"
    for selector in _script_views(chapter):
        view = page.select_one(selector)
        assert view is not None and view.find("script"), f"view {selector} lost its inline script"
    slides = site / "slides" / f"{chapter.name}.slides.html"
    assert slides.is_file() and page.find("a", href=f"slides/{chapter.name}.slides.html")


def test_nothing_on_the_site_loads_from_the_internet(site) -> None:
    remote = re.compile(r"^(https?:)?//")
    for html in site.rglob("*.html"):
        soup = _soup(html)
        for tag, attribute in LOADED:
            for element in soup.find_all(tag):
                if tag == "link" and not set(element.get("rel", [])) & LOADED_LINKS:
                    continue
                value = element.get(attribute, "")
                assert not remote.match(value), f"{html.relative_to(site)} loads {value}"
    for css in site.rglob("*.css"):
        urls = re.findall(
            r"url\(\s*['\"]?(https?:)?//", css.read_text(encoding="utf-8", errors="replace")
        )
        assert not urls, f"{css.relative_to(site)} loads a remote url()"


# --- in the browser, offline -------------------------------------------------------------


def test_maths_is_rendered_on_every_chapter_page_that_has_some(site, browser_page) -> None:
    pages = [
        site / f"{chapter.name}.html"
        for chapter in CHAPTERS
        if _soup(site / f"{chapter.name}.html").select("span.math, div.math")
    ]
    assert pages, "no chapter has maths: the test would prove nothing"
    failed = _record_failures(browser_page)
    for path in pages:
        page = browser_page.open(path)
        _wait_for_maths(page)
        maths = page.locator("span.math.notranslate, div.math.notranslate")
        rendered = page.locator(
            "span.math.notranslate:has(.MathJax), div.math.notranslate:has(.MathJax)"
        )
        assert maths.count() > 0 and rendered.count() == maths.count(), (
            f"{path.name}: unrendered maths"
        )
        assert page.locator(".noError, .merror").count() == 0, (
            f"{path.name}: TeX MathJax cannot read"
        )
        leftover = RAW_TEX.findall(page.evaluate(ARTICLE_TEXT))
        assert not leftover, f"{path.name}: raw TeX in the text: {leftover[:5]}"
        page.close()
    assert browser_page.blocked == []
    assert _unexpected(browser_page.console_errors, failed) == [], failed


def test_plots_and_the_attention_views_work_offline(site, browser_page, chromium_browser) -> None:
    with_views = [chapter for chapter in CHAPTERS if _script_views(chapter)]
    assert with_views, "no chapter stores an interactive view: the test would prove nothing"
    static = chromium_browser.new_context(java_script_enabled=False)
    static.route(
        "**/*", lambda route: route.abort() if _remote(route.request.url) else route.continue_()
    )
    try:
        for chapter in with_views:
            path = site / f"{chapter.name}.html"
            page = browser_page.open(path)
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "article img", "imgs => imgs.map(i => i.naturalWidth)"
            )
            assert sizes and all(width > 0 for width in sizes), f"{path.name}: a plot did not load"
            frozen = static.new_page()
            frozen.goto(path.resolve().as_uri())
            for selector in _script_views(chapter):
                view = page.locator(selector).first
                assert view.is_visible(), f"{path.name}: view {selector} is not shown"
                live, still = view.inner_html(), frozen.locator(selector).first.inner_html()
                assert live != still, f"{path.name}: the script of view {selector} did not run"
            page.close()
            frozen.close()
    finally:
        static.close()
    assert browser_page.blocked == []
    assert _unexpected(browser_page.console_errors) == []


def test_search_works_offline(site, browser_page) -> None:
    chapter = CHAPTERS[-1]
    word = max(re.findall(r"[A-Za-z]{6,}", chapter.title), key=len).lower()
    page = browser_page.open(Path(site / "search.html"))
    page.goto((site / "search.html").resolve().as_uri() + f"?q={word}")
    page.wait_for_selector("#search-results li a", timeout=60_000)
    hrefs = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.href)")
    assert any(href.split("?")[0].endswith(f"{chapter.name}.html") for href in hrefs), hrefs
    assert browser_page.blocked == []


def test_slides_open_from_disk_with_maths_and_views(site, browser_page) -> None:
    for chapter in CHAPTERS:
        slides = site / "slides" / f"{chapter.name}.slides.html"
        views = _script_views(chapter)
        cells = nbformat.read(chapter.path, as_version=4).cells
        has_maths = any(cell.cell_type == "markdown" and "$" in cell.source for cell in cells)
        if not (views or has_maths):
            continue
        page = browser_page.open(slides)
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=60_000)
        assert page.evaluate("() => Reveal.getTotalSlides()") > 3
        if has_maths:
            _wait_for_maths(page)
            assert page.locator(".MathJax").count() > 0, f"{slides.name}: no maths rendered"
        for selector in views:
            assert page.locator(f"{selector} script").count() > 0, f"{slides.name}: {selector}"
        page.close()
    assert browser_page.blocked == []
    assert _unexpected(browser_page.console_errors) == []


def test_slides_built_on_their_own_carry_their_libraries(tmp_path) -> None:
    from course.slides import build_slides

    (slides,) = build_slides([CHAPTERS[0].path], tmp_path)
    soup = _soup(slides)
    sources = [script["src"] for script in soup.find_all("script", src=True)]
    sources += [link["href"] for link in soup.find_all("link", rel="stylesheet")]
    assert sources, "the slides load no library at all"
    for source in sources:
        assert (tmp_path / source.split("?")[0]).is_file(), f"{source} is not next to the slides"
