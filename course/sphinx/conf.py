"""Sphinx configuration of the book's website; `python -m course.site` builds with it.

The stack is Jupyter Book 1's own engine used directly: Sphinx, MyST-NB (reads the stored
notebooks, executes nothing) and sphinx-book-theme. Everything the pages load ships with the
build: the theme's files, Sphinx's search index, and MathJax 2.7 copied out of the installed
`jupyter-server-mathjax` package at build time, with the STIX-Web fonts it ships.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `course`

from course.assets import MATHJAX_CONFIG, MATHJAX_FONTS, copy_mathjax  # noqa: E402

project = "GPT Variants"
author = "the GPT Variants authors"
copyright = "code under the MIT License, text and figures under CC BY 4.0"
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
extensions = ["myst_nb", "sphinx.ext.mathjax"]

# MyST-NB: show the stored outputs; never run a notebook, never load widget scripts from a CDN.
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_update_mathjax = False  # MathJax 2 is configured below
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "GPT Variants"
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "launch_buttons": {},
    "navigation_with_keys": False,
}

mathjax_path = f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
mathjax2_config = {
    # Sphinx wraps maths in \( \) and \[ \] inside class="math"; MathJax reads nothing else,
    # so a "$" in code, outputs or an attention view is left alone.
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": False,
        "ignoreClass": ".*",
        "processClass": "math",
    },
    "HTML-CSS": MATHJAX_FONTS,
    "showMathMenu": False,
    "messageStyle": "none",
}


def _copy_mathjax(app, exception) -> None:
    """Copy MathJax from the installed package into the built site's _static/mathjax."""
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static" / "mathjax")


def setup(app) -> None:
    app.connect("build-finished", _copy_mathjax)
