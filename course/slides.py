"""Each chapter as reveal.js slides that open from disk, and slide marks for live RISE shows.

Slides come from nbconvert's reveal.js exporter, with a template of ours that loads nothing
from the network: reveal.js is copied from the installed `sphinx-revealjs` package into the
output folder, MathJax from `jupyter-server-mathjax`, and the CDN scripts the stock template
asks for (require.js, jQuery, Mermaid) are left out.

Where the slides break: a teacher's own marks (cell metadata `slideshow.slide_type`, set in
JupyterLab's property inspector) are used as they are. A chapter without marks is cut by its
structure (`slide_marks`): each `#`/`##` heading starts a slide, each `###` heading or a
paragraph that follows a code cell a sub-slide (reveal's vertical steps), and hidden solution
cells are skipped.

Run: `python -m course.slides [NOTEBOOK ...] [--out build/slides]`, and to present live in
JupyterLab with the RISE extension, `python -m course.slides --mark NOTEBOOK` writes those
marks into the notebook's cell metadata (nothing else changes).
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter

from .assets import MATHJAX_CONFIG, MATHJAX_FONTS, copy_mathjax, copy_reveal
from .chapters import REPO_ROOT, notebook_arguments
from .exercises import is_hidden

DEFAULT_OUT = REPO_ROOT / "build" / "slides"
TEMPLATE_DIR = Path(__file__).with_name("templates")
_QUIET_LOG = logging.getLogger("course.slides.nbconvert")
_QUIET_LOG.setLevel(logging.ERROR)
HEADING = re.compile(r"^(#{1,3}) ", re.MULTILINE)


def has_slide_marks(nb: nbformat.NotebookNode) -> bool:
    """True when any cell already says what kind of slide it is."""
    return any(cell.metadata.get("slideshow", {}).get("slide_type") for cell in nb.cells)


def slide_marks(nb: nbformat.NotebookNode) -> list[str]:
    """A slide type for every cell, from the chapter's headings (see the module docstring)."""
    marks = []
    after_code = False
    for index, cell in enumerate(nb.cells):
        heading = HEADING.match(cell.source.lstrip()) if cell.cell_type == "markdown" else None
        if index == 0 or (heading and len(heading.group(1)) <= 2):
            mark = "slide"
        elif is_hidden(cell):
            mark = "skip"
        elif heading or (cell.cell_type == "markdown" and after_code):
            mark = "subslide"
        else:
            mark = "-"
        marks.append(mark)
        if mark != "skip":
            after_code = cell.cell_type == "code"
    return marks


def with_slide_marks(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook whose cells all carry a slide type (the teacher's win)."""
    nb = copy.deepcopy(nb)
    if not has_slide_marks(nb):
        for cell, mark in zip(nb.cells, slide_marks(nb), strict=True):
            cell.metadata["slideshow"] = {"slide_type": mark}
    return nb


def slides_exporter() -> SlidesExporter:
    """nbconvert's reveal.js exporter with the book's offline template."""
    return SlidesExporter(
        template_name="offline_reveal",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        reveal_url_prefix="reveal.js",
        reveal_theme="white",
        reveal_transition="none",
        reveal_scroll=True,
        reveal_number="c/t",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        # nbconvert warns about every plot without alt text; the chapters' plots have none yet
        log=_QUIET_LOG,
    )


def build_slides(paths: list[Path], out: Path = DEFAULT_OUT, mathjax: str = "") -> list[Path]:
    """Write `NAME.slides.html` for every notebook into `out`, with reveal.js and MathJax.

    `mathjax` is the relative URL of a MathJax copy the slides can share (the site passes its
    own); empty copies MathJax into `out/mathjax`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_reveal(out / "reveal.js")
    if not mathjax:
        copy_mathjax(out / "mathjax")
    exporter = slides_exporter()
    written = []
    for path in paths:
        nb = with_slide_marks(nbformat.read(path, as_version=4))
        resources = {
            "metadata": {"name": Path(path).stem},
            "course_mathjax_url": f"{mathjax or 'mathjax'}/MathJax.js?config={MATHJAX_CONFIG}",
            "mathjax_fonts": MATHJAX_FONTS,
        }
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        target = out / f"{Path(path).stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def mark_in_place(path: Path) -> int:
    """Write heading-based slide types into a notebook's cells; returns how many it marked.

    Only the `slideshow` metadata of cells changes; a notebook that already has slide marks
    is left alone (returns 0), so a teacher's own choices are never overwritten.
    """
    nb = nbformat.read(path, as_version=4)
    if has_slide_marks(nb):
        return 0
    marked = with_slide_marks(nb)
    nbformat.write(marked, path)
    return len(marked.cells)


def main(argv: list[str] | None = None) -> int:
    """Command line: build slides for chapters, or mark chapters for RISE with --mark."""
    parser = argparse.ArgumentParser(
        prog="python -m course.slides",
        description="Build offline reveal.js slides of the chapters, or mark them for RISE.",
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/slides")
    parser.add_argument(
        "--mark",
        action="store_true",
        help="write slide types into the given notebooks (for JupyterLab RISE) instead",
    )
    args = parser.parse_args(argv)
    if args.mark and not args.notebooks:
        parser.error(
            "--mark changes notebooks in place: name them, e.g. notebooks/04_attention.ipynb"
        )
    paths = notebook_arguments(parser, args.notebooks)
    if args.mark:
        for path in paths:
            count = mark_in_place(path)
            print(f"{path}: " + (f"marked {count} cells" if count else "already has slide marks"))
        return 0
    for target in build_slides(paths, args.out):
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
