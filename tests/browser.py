"""A real browser for the tests: headless Chromium driven by Playwright, with the network shut.

The attention views (gptlib.viz) and the book's static site (course/) promise to work offline.
These fixtures open pages in the system's Chromium (Debian's `chromium` package; `.ci/run`
installs it) and refuse every request that would leave the machine, recording it, so a test can
assert that a page asked for nothing. Playwright never downloads a browser here: it is pointed
at the one the system has. On a machine without Chromium the browser tests skip and say how to
install it.

Use from a test module::

    from browser import BrowserPage  # noqa: F401  (the fixtures below are found by conftest)

    def test_page_renders(browser_page):
        page = browser_page.open(path_to_html_file)
        assert page.locator("svg").count() > 0
        assert browser_page.blocked == []
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Without the background-networking switches Chromium phones home at every start (update
# checks, field trials), which a closed network refuses many times over.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
INSTALL_HINT = (
    "the browser tests need Chromium and Playwright: install Chromium with your system's "
    "package manager (Debian/Ubuntu: `sudo apt-get install chromium`) and "
    "`python -m pip install playwright` (no `playwright install` needed), or set "
    "GPTLIB_CHROMIUM to the browser's path"
)


def find_chromium() -> str | None:
    """Path of the system's Chromium or Chrome, or None; GPTLIB_CHROMIUM overrides the search."""
    explicit = os.environ.get("GPTLIB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BrowserPage:
    """One browser page whose every non-local request is refused and recorded in `blocked`."""

    context: object
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page: object = None

    def open(self, target: str | os.PathLike, wait_ms: int = 0):
        """Load a local file (path) or an HTML string, and return the Playwright page."""
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        if isinstance(target, os.PathLike) or (
            isinstance(target, str) and not target.lstrip().startswith("<")
        ):
            self.page.goto(Path(target).resolve().as_uri())
        else:
            self.page.set_content(target)
        if wait_ms:
            self.page.wait_for_timeout(wait_ms)
        return self.page


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[object]:
    """A headless Chromium for the whole test session (skips when there is none)."""
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(INSTALL_HINT)
    if executable is None:
        pytest.skip(INSTALL_HINT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium_browser) -> Iterator[BrowserPage]:
    """A fresh browser context with the network shut: see BrowserPage."""
    context = chromium_browser.new_context(viewport={"width": 1200, "height": 900})
    wrapper = BrowserPage(context)

    def refuse(route) -> None:
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            wrapper.blocked.append(url)
            route.abort()

    context.route("**/*", refuse)
    # Requests that routing does not see (service workers, prefetches) still show up here.
    context.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(LOCAL_SCHEMES) or request.url in wrapper.blocked
            else wrapper.blocked.append(request.url)
        ),
    )
    yield wrapper
    context.close()
