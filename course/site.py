"""Build the book's static website from the stored notebooks, offline, with one command.

The site is built by Sphinx with MyST-NB and sphinx-book-theme (Jupyter Book 1's engine,
configured in `course/sphinx/conf.py`), from the outputs stored in the notebooks: nothing is
executed. Its sources are staged in `build/site-src/`: a copy of each chapter with a box of
facts under its title (run time, exercises, a link to its slides) and its hidden solution
cells folded (MyST-NB's `hide-input` tag), the bibliography `notebooks/references.md`, the
instructor guide (`course.guide`) and a landing page. The slides (`course.slides`) are built
into the site's `slides/` folder.

Run: `python -m course.site [--out build/site] [--no-slides]`, then open
`build/site/index.html`. Nothing is downloaded while building or reading.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path

import nbformat
from sphinx.cmd.build import build_main

from .chapters import NOTEBOOKS_DIR, REPO_ROOT, Chapter, discover_chapters, format_seconds
from .exercises import is_hidden
from .guide import instructor_guide
from .slides import build_slides

CONF_DIR = Path(__file__).with_name("sphinx")
DEFAULT_OUT = REPO_ROOT / "build" / "site"
BIBLIOGRAPHY = "references.md"

LANDING = """# GPT Variants

An interactive textbook on the GPT family. Each chapter is a Jupyter notebook that builds one
piece of a GPT-style language model, shows it working, and then shows that the book's small
library, `gptlib`, holds exactly that piece: from GPT-1's post-LN block to the GPT-4 era's
grouped-query attention, mixture of experts, RMSNorm, SwiGLU and rotary positions.

This website shows every chapter with the outputs of its last run, so it reads without
Python. To run the chapters yourself, follow the Quickstart in the repository's `README.md`:
every chapter runs in about a minute on a laptop CPU, offline.

Teachers: start with the [instructor guide](instructor_guide.md); each chapter also has
{slides_note}. Sources are listed in the [bibliography](references.md).

| # | chapter | run time | exercises |
|---|---|---|---|
{rows}

Code under the MIT License, text and figures under CC BY 4.0: teachers may copy, adapt and
teach from any of it, crediting "GPT Variants" (see the instructor guide).

```{{toctree}}
:caption: Chapters
:maxdepth: 1
:hidden:

{chapters}
```

```{{toctree}}
:caption: For teachers and readers
:maxdepth: 1
:hidden:

instructor_guide
{bibliography}
```
"""


def _facts(chapter: Chapter, slides: bool) -> str:
    graded = len(chapter.graded_exercises)
    discussion = len(chapter.exercises) - graded
    exercises = f"{graded} with a check" + (f", {discussion} to discuss" if discussion else "")
    facts = [
        f"**Run time:** {format_seconds(chapter.run_seconds)} on a 2-core CPU "
        "(as stored with its outputs)",
        f"**Exercises:** {exercises}",
        f"**Notebook:** `notebooks/{chapter.path.name}`",
    ]
    if slides:
        facts.append(f'**Slides:** <a href="slides/{chapter.name}.slides.html">open the slides</a>')
    return (
        ":::{admonition} About this chapter\n:class: chapter-facts\n\n"
        + "\n\n".join(facts)
        + "\n:::"
    )


def site_notebook(chapter: Chapter, slides: bool) -> nbformat.NotebookNode:
    """The chapter as the site shows it: facts under the title, solutions folded."""
    nb = copy.deepcopy(nbformat.read(chapter.path, as_version=4))
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if is_hidden(cell) and "hide-input" not in tags:
            tags.append("hide-input")
        if cell.metadata.get("jupyter", {}).get("outputs_hidden") and "hide-output" not in tags:
            tags.append("hide-output")
        if tags:
            cell.metadata["tags"] = tags
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_facts(chapter, slides)))
    return nb


def _landing(chapters: list[Chapter], has_bibliography: bool, slides: bool) -> str:
    rows = [
        f"| {c.number} | [{c.title}]({c.path.name}) | {format_seconds(c.run_seconds)} | "
        f"{len(c.graded_exercises)} |"
        for c in chapters
    ]
    return LANDING.format(
        rows="\n".join(rows),
        chapters="\n".join(f"{c.number} · {c.title.split(':')[0]} <{c.name}>" for c in chapters),
        bibliography="references" if has_bibliography else "",
        slides_note="slides, linked under its title"
        if slides
        else "slides (`python -m course.slides`)",
    )


def stage_sources(
    chapters: list[Chapter], srcdir: Path, notebooks_dir: Path, slides: bool = True
) -> None:
    """Write the Sphinx sources of the site into `srcdir` (see the module docstring)."""
    shutil.rmtree(srcdir, ignore_errors=True)
    srcdir.mkdir(parents=True)
    for chapter in chapters:
        nbformat.write(site_notebook(chapter, slides), srcdir / chapter.path.name)
    bibliography = notebooks_dir / BIBLIOGRAPHY
    if bibliography.is_file():
        shutil.copyfile(bibliography, srcdir / BIBLIOGRAPHY)
    (srcdir / "instructor_guide.md").write_text(instructor_guide(chapters), encoding="utf-8")
    landing = _landing(chapters, bibliography.is_file(), slides)
    (srcdir / "index.md").write_text(landing, encoding="utf-8")


def build_site(
    out: Path = DEFAULT_OUT,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    slides: bool = True,
    quiet: bool = True,
) -> Path:
    """Build the website into `out` and return the path of its `index.html`.

    Raises RuntimeError when Sphinx reports a failure (its messages are printed above).
    """
    out, notebooks_dir = Path(out), Path(notebooks_dir)
    chapters = discover_chapters(notebooks_dir)
    srcdir = out.parent / f"{out.name}-src"
    stage_sources(chapters, srcdir, notebooks_dir, slides)
    # -E -a: every page afresh, so no page keeps a sidebar from an earlier build
    arguments = ["-b", "html", "-E", "-a", "-c", str(CONF_DIR), "-d", str(srcdir / ".doctrees")]
    status = build_main([*arguments, *(["-q"] if quiet else []), str(srcdir), str(out)])
    if status != 0:
        raise RuntimeError(f"Sphinx could not build the site (exit status {status})")
    if slides:
        paths = [chapter.path for chapter in chapters]
        build_slides(paths, out / "slides", mathjax="../_static/mathjax")
    return out / "index.html"


def folder_size(folder: Path) -> int:
    """Bytes of all files under `folder`."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    """Command line: build the site and say where it is, how big, and how long it took."""
    parser = argparse.ArgumentParser(
        prog="python -m course.site",
        description="Build the book's offline static website from the stored notebooks.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/site")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR)
    parser.add_argument("--no-slides", action="store_true", help="leave the slides out")
    parser.add_argument("--clean", action="store_true", help="delete the old site first")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    args = parser.parse_args(argv)
    if args.clean:
        for folder in (args.out, args.out.parent / f"{args.out.name}-src"):
            shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    try:
        index = build_site(args.out, args.notebooks, not args.no_slides, not args.verbose)
    except (RuntimeError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\n")
    seconds = time.perf_counter() - start
    size = folder_size(args.out) / 1e6
    print(f"built {index} ({size:.1f} MB) in {seconds:.0f} s; open it in a browser, offline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
