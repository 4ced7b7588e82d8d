"""Grade a student's notebook: run it in its own kernel and report each exercise.

The notebook runs top to bottom in a separate Jupyter kernel process through nbclient (the
library behind `jupyter nbconvert --execute`), never in the grader's process. Each graded
exercise is the cell that ends with a call to its check, and its outcome is:

- **correct**: the cell ran without an error (the check raised nothing; the book's checks
  then print a line starting with "correct");
- **not yet**: the cell raised `NotImplementedError` (the student edition's stub, not yet
  answered) or `AssertionError` (the check's hint), or printed "not yet";
- **error**: any other exception, a cell that ran past the per-cell time limit, or a cell that
  never ran because the kernel died or a cell before it would not stop.

Errors never stop the grading: a crash, a loop or a dead kernel is reported, not fatal. The
grader needs no solution: it runs the checks the student's copy holds, and warns when a check
differs from the book's chapter of the same name (it may have been edited).

Run: `python -m course.grade STUDENT.ipynb [...] [--timeout 300] [--json results.json]`.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from .chapters import NOTEBOOKS_DIR
from .exercises import cell_stdout, check_definitions, find_exercises

TIMEOUT_ERROR = "CellTimeoutError"
NOT_YET_LINE = re.compile(r"\bnot yet\b", re.IGNORECASE)
OUTCOMES = ("correct", "not yet", "error")


@dataclass
class ExerciseResult:
    """The outcome of one exercise: "correct", "not yet" or "error", and why."""

    label: str
    outcome: str
    detail: str = ""


@dataclass
class GradeReport:
    """Everything the grader found in one notebook."""

    notebook: str
    results: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def correct(self) -> int:
        """How many exercises are correct."""
        return sum(result.outcome == "correct" for result in self.results)

    def format(self) -> str:
        """The report as people read it, one line per exercise, then the total."""
        lines = [f"{self.notebook} (ran in {self.seconds:.0f} s)"]
        for result in self.results:
            detail = f": {result.detail}" if result.detail else ""
            lines.append(f"  {result.outcome:<8}  {result.label}{detail}")
        lines.append(f"  total: {self.correct} of {len(self.results)} correct")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


class _StopGrading(Exception):
    """A cell would not stop when interrupted: the rest of the notebook cannot run."""


def graded_cells(nb: nbformat.NotebookNode) -> list[tuple[int, str]]:
    """(cell index, exercise label) of each graded cell.

    Cells the student edition marked (metadata `course.graded`) come first; a notebook
    without marks (the book's own chapter) is read with `find_exercises`.
    """
    marked = [
        (index, cell.metadata["course"].get("label", f"cell {index}"))
        for index, cell in enumerate(nb.cells)
        if cell.metadata.get("course", {}).get("graded")
    ]
    if marked:
        return marked
    return [
        (exercise.graded_cell, exercise.label)
        for exercise in find_exercises(nb)
        if exercise.graded_cell is not None
    ]


def classify(reply: dict | None, stdout: str, timeout: float, not_run: str) -> tuple[str, str]:
    """Outcome and detail of one graded cell from its execute reply and its printed output."""
    if reply is None:
        return "error", f"not run: {not_run}"
    if reply.get("status") == "ok":
        lines = [line for line in stdout.splitlines() if NOT_YET_LINE.search(line)]
        return ("not yet", lines[-1].strip()) if lines else ("correct", "")
    name, value = reply.get("ename", "Error"), str(reply.get("evalue", "")).strip()
    if name == "NotImplementedError":
        return "not yet", "not answered yet"
    if name == "AssertionError":
        return "not yet", value or "the check failed"
    if name in (TIMEOUT_ERROR, "KeyboardInterrupt"):
        return "error", f"ran longer than {timeout:g} s and was interrupted (a loop?)"
    return "error", f"{name}: {value}" if value else name


def edited_checks(nb: nbformat.NotebookNode, book_chapter: Path) -> list[str]:
    """Names of the checks whose code differs from (or is missing in) the book's chapter."""
    book = check_definitions(nbformat.read(book_chapter, as_version=4))
    student = {name: ast.dump(node) for name, node in check_definitions(nb).items()}
    return sorted(name for name in book if student.get(name) != ast.dump(book[name]))


def grade_notebook(
    path: Path | str,
    timeout: float = 300,
    cwd: Path | str = NOTEBOOKS_DIR,
    kernel_name: str = "",
    book_dir: Path | str | None = NOTEBOOKS_DIR,
) -> GradeReport:
    """Run one notebook in a fresh kernel and grade each exercise (see the module docstring).

    `timeout` is the limit for one cell, in seconds; `cwd` the kernel's working folder (the
    book's notebooks/ by default, so relative paths such as ../data resolve as in the book);
    `kernel_name` "" uses the notebook's own kernel. Raises ValueError for a file that is
    not a notebook; every problem while running is reported in the result instead.
    """
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several types for unreadable files
        raise ValueError(f"{path} is not a readable Jupyter notebook: {error}") from error
    report = GradeReport(notebook=str(path))
    targets = graded_cells(nb)
    expected = nb.metadata.get("course", {}).get("exercises", [])
    missing = [label for label in expected if label not in {label for _, label in targets}]
    if not targets and not missing:
        report.notes.append("no graded exercise found (no cell calls a check...() function)")
        return report
    replies: dict[int, dict] = {}
    timed_out: list[int] = []  # cells that ran past the limit since the last one that did not

    def record(cell, cell_index: int, execute_reply: dict) -> None:
        content = execute_reply.get("content", {})
        replies[cell_index] = content
        if content.get("ename") != TIMEOUT_ERROR:
            timed_out.clear()
            return
        timed_out.append(cell_index)
        if len(timed_out) >= 2:  # the interrupted cell is still running: nothing else can
            replies.pop(cell_index)
            raise _StopGrading(timed_out[0])

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": TIMEOUT_ERROR, "evalue": f"{timeout:g} s", "traceback": []},
        resources={"metadata": {"path": str(cwd)}},
        on_cell_executed=record,
    )
    not_run = "the notebook stopped before this cell"
    start = time.perf_counter()
    try:
        client.execute()
    except DeadKernelError:
        last = max(replies, default=-1)
        not_run = f"the kernel died while running cell {last + 1} (a crash or out of memory)"
        report.notes.append(not_run)
    except _StopGrading as stop:
        not_run = f"cell {stop.args[0]} did not stop when interrupted after {timeout:g} s"
        report.notes.append(not_run + "; the cells after it were not run")
    except Exception as error:  # a kernel that cannot start, a broken kernelspec, ...
        not_run = f"the notebook could not run: {type(error).__name__}: {error}"
        report.notes.append(not_run)
    report.seconds = time.perf_counter() - start
    for index, label in targets:
        outcome, detail = classify(
            replies.get(index), cell_stdout(nb.cells[index]), timeout, not_run
        )
        report.results.append(ExerciseResult(label, outcome, detail))
    report.results.extend(
        ExerciseResult(label, "error", "its cell is missing (deleted?)") for label in missing
    )
    graded = {index for index, _ in targets}
    for index, content in sorted(replies.items()):
        if index not in graded and content.get("status") == "error":
            what = f"{content.get('ename')}: {str(content.get('evalue', ''))[:120]}"
            report.notes.append(f"cell {index} (not an exercise) raised {what}")
    book_chapter = Path(book_dir) / path.name if book_dir is not None else None
    if book_chapter and book_chapter.is_file() and book_chapter.resolve() != path.resolve():
        for name in edited_checks(nb, book_chapter):
            report.notes.append(f"{name} differs from the book's {path.name}: edited check?")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: grade each notebook given and print (or save) the results."""
    parser = argparse.ArgumentParser(
        prog="python -m course.grade",
        description="Run students' notebooks in a separate kernel and grade each exercise.",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="the students' .ipynb files")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds one cell may run (default: 300)"
    )
    parser.add_argument(
        "--cwd",
        type=Path,
        default=NOTEBOOKS_DIR,
        help="kernel's working folder (book's notebooks/)",
    )
    parser.add_argument("--kernel", default="", help="kernel name (default: the notebook's own)")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    reports = []
    for path in args.notebooks:
        try:
            report = grade_notebook(path, args.timeout, args.cwd, args.kernel)
        except (ValueError, FileNotFoundError) as error:
            report = GradeReport(notebook=str(path), notes=[str(error)])
        reports.append(report)
        print(report.format(), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
