"""The book's chapters as the course tools see them: title, objectives, run time, exercises.

Everything here is read from the stored notebooks, never by running them: the learning
objectives from a chapter's opening cells, its run time from the per-cell timestamps that
nbclient (behind `jupyter nbconvert --execute`) writes into each code cell's metadata.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

from .exercises import Exercise, find_exercises

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"

# "**You will learn to**", "**You will learn**", "**What you'll learn**", "## Learning objectives"
OBJECTIVES_HEADING = re.compile(
    r"^\s*(\*\*[^*]*\b(learn|objectives)[^*]*\*\*:?|#+ .*\b(learn|objectives).*)\s*$",
    re.IGNORECASE,
)
BULLET = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(.*)$")
MODULES_LINE = re.compile(r"^\*\*`?gptlib`? modules used:?\*\*:?\s*(.*)$", re.IGNORECASE)
TITLE_NUMBER = re.compile(r"^(?:\d+|[A-Z])\s*[·.:\-—]\s*")


@dataclass
class Chapter:
    """One chapter notebook: where it is, what it teaches, how long it runs, its exercises."""

    path: Path
    number: str
    title: str
    objectives: list[str]
    modules: str
    run_seconds: float | None
    exercises: list[Exercise] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file name without its suffix, e.g. `04_attention`."""
        return self.path.stem

    @property
    def graded_exercises(self) -> list[Exercise]:
        """The exercises with a check the grader can run."""
        return [exercise for exercise in self.exercises if exercise.graded_cell is not None]


def discover_chapters(notebooks_dir: Path | str = NOTEBOOKS_DIR) -> list[Chapter]:
    """Every `*.ipynb` in `notebooks_dir`, in reading (file-name) order, read as a Chapter.

    Raises FileNotFoundError when the folder holds no notebook, so a wrong path is not
    mistaken for an empty book.
    """
    folder = Path(notebooks_dir)
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(
            f"no chapter notebooks (*.ipynb) in {folder}; pass the book's notebooks/ folder"
        )
    return [read_chapter(path) for path in paths]


def read_chapter(path: Path | str) -> Chapter:
    """Read one chapter notebook into a Chapter (nothing is executed)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    intro = opening_markdown(nb)
    return Chapter(
        path=path,
        number=path.stem.split("_", 1)[0],
        title=chapter_title(nb, fallback=path.stem),
        objectives=learning_objectives(nb),
        modules=_modules_used(intro),
        run_seconds=stored_run_seconds(nb),
        exercises=find_exercises(nb),
    )


def opening_markdown(nb: nbformat.NotebookNode) -> str:
    """The text of the markdown cells before the first code cell (a chapter's introduction)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            break
        if cell.cell_type == "markdown":
            texts.append(cell.source)
    return "\n\n".join(texts)


def chapter_title(nb: nbformat.NotebookNode, fallback: str = "") -> str:
    """The first `# ` heading without its chapter number ("04 · Attention" gives "Attention")."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return TITLE_NUMBER.sub("", line[2:].strip())
    return fallback


def learning_objectives(nb: nbformat.NotebookNode) -> list[str]:
    """The bullet list that follows "You will learn ..." in a chapter's opening cells.

    Continuation lines of a bullet are joined to it. Returns [] when the introduction has no
    such list (the instructor guide then says so, rather than inventing objectives).
    """
    lines = opening_markdown(nb).splitlines()
    for start, line in enumerate(lines):
        if not OBJECTIVES_HEADING.match(line):
            continue
        items: list[str] = []
        for following in lines[start + 1 :]:
            bullet = BULLET.match(following)
            if bullet:
                items.append(bullet.group(1).strip())
            elif items and following.strip() and following.startswith((" ", "\t")):
                items[-1] += " " + following.strip()
            elif items or following.strip():
                break  # the list ended, or the heading is not followed by a list
        if items:
            return [item.rstrip(";.") for item in items]
    return []


def _modules_used(intro: str) -> str:
    """The text of the "**gptlib modules used:**" paragraph, joined onto one line."""
    paragraphs = re.split(r"\n\s*\n", intro)
    for paragraph in paragraphs:
        text = " ".join(line.strip() for line in paragraph.splitlines())
        match = MODULES_LINE.match(text)
        if match:
            return match.group(1).strip()
    return ""


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stored_run_seconds(nb: nbformat.NotebookNode) -> float | None:
    """Seconds from the first code cell's start to the last cell's reply, as stored.

    nbclient records `metadata.execution` timestamps in every cell it runs
    (`iopub.execute_input`, `shell.execute_reply`). Returns None when any code cell lacks
    them (a notebook saved from JupyterLab without timing), since a partial sum would
    understate the run time. Kernel start-up is not included.
    """
    starts, ends = [], []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        timing = cell.metadata.get("execution", {})
        start = timing.get("iopub.execute_input") or timing.get("iopub.status.busy")
        end = timing.get("shell.execute_reply")
        if not (start and end):
            return None
        starts.append(_timestamp(start))
        ends.append(_timestamp(end))
    if not starts:
        return None
    return (max(ends) - min(starts)).total_seconds()


def format_seconds(seconds: float | None) -> str:
    """A run time for people: "6 s", "1 min 56 s", or "not recorded"."""
    if seconds is None:
        return "not recorded"
    whole = round(seconds)
    if whole < 60:
        return f"{max(whole, 1)} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def notebook_arguments(parser: argparse.ArgumentParser, given: list[Path]) -> list[Path]:
    """The notebooks a command was given, or every chapter; exits with a message if one is missing."""
    paths = given or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    missing = [str(path) for path in paths if not Path(path).is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    return paths
