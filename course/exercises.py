"""Find a chapter's exercises, and say where they depart from the book's exercise convention.

The convention (written out in the instructor guide, course/instructor_guide.md): after the last
`## ... Exercises` heading, each exercise is a markdown statement starting
`**Exercise N (short title).**`; a code exercise has a visible cell defining
`check_<name>(answer)` and a solution cell hidden by default (metadata
`jupyter.source_hidden`) that ends by calling the check, which prints a line starting with
`correct` or raises AssertionError; a discussion exercise keeps its answer in a markdown
`<details>` block. The tools tolerate reasonable departures (a statement written `**1. ...**`,
statements batched in one cell, a print after the check) and `conformance_problems` names them.

Run `python -m course.exercises [NOTEBOOK ...]` to list the departures of every chapter.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

EXERCISES_HEADING = re.compile(r"^##\s+.*\bexercises\b", re.IGNORECASE | re.MULTILINE)
STATEMENT = re.compile(
    r"^\*\*(?P<word>Exercise\s+)?(?P<number>\d+[a-z]?)\b(?P<rest>[^*\n]*)\*\*", re.MULTILINE
)
CONVENTIONAL_STATEMENT = re.compile(r"^\*\*Exercise \d+[a-z]? \([^)]+\)\.\*\*")
CHECK_CALL_LINE = re.compile(r"^(check\w*)\(", re.MULTILINE)
CORRECT_LINE = re.compile(r"^correct\b", re.IGNORECASE | re.MULTILINE)


@dataclass
class Exercise:
    """One exercise of a chapter, located by cell indices of the notebook it was read from."""

    number: str
    title: str
    statement_cell: int
    solution_cells: list[int] = field(default_factory=list)
    graded_cell: int | None = None
    check_name: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How people name it: "Exercise 2 (from MHA to GQA)"."""
        return f"Exercise {self.number}" + (f" ({self.title})" if self.title else "")

    @property
    def kind(self) -> str:
        """Either "code" (a check grades it) or "discussion" (its answer is prose)."""
        return "code" if self.graded_cell is not None else "discussion"


def exercises_start(nb: nbformat.NotebookNode) -> int | None:
    """Index of the last markdown cell with a `## ... Exercises` heading, or None."""
    found = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown" and EXERCISES_HEADING.search(cell.source)
    ]
    return found[-1] if found else None


def is_hidden(cell: nbformat.NotebookNode) -> bool:
    """True for a code cell whose source JupyterLab shows collapsed (a solution)."""
    return cell.cell_type == "code" and bool(cell.metadata.get("jupyter", {}).get("source_hidden"))


def check_calls(source: str) -> list[str]:
    """Names of the `check...(...)` functions called at the top level of a cell, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: fall back to lines that start with a check call
        return CHECK_CALL_LINE.findall(source)
    return [name for statement in tree.body if (name := _called_check(statement))]


def check_definitions(nb: nbformat.NotebookNode) -> dict[str, ast.FunctionDef]:
    """Every top-level `def check...(...)` in the notebook's code cells, by name."""
    definitions = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check"):
                definitions[node.name] = node
    return definitions


def _called_check(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        function = statement.value.func
        if isinstance(function, ast.Name) and function.id.startswith("check"):
            return function.id
    return None


def _title(rest: str) -> str:
    title = rest.strip().rstrip(".:").strip()
    title = re.sub(r"^[.:—–-]+\s*", "", title)
    if title.startswith("(") and title.endswith(")"):
        title = title[1:-1]
    return title.strip()


def _statements(nb: nbformat.NotebookNode, start: int) -> list[Exercise]:
    exercises = []
    for index in range(start, len(nb.cells)):
        cell = nb.cells[index]
        if cell.cell_type != "markdown":
            continue
        for match in STATEMENT.finditer(cell.source):
            exercise = Exercise(match.group("number"), _title(match.group("rest")), index)
            line = cell.source[match.start() :].splitlines()[0]
            if not CONVENTIONAL_STATEMENT.match(line):
                exercise.problems.append(
                    f"statement starts {line[:40]!r}: write **Exercise {exercise.number} "
                    "(short title).**"
                )
            exercises.append(exercise)
    return exercises


def _assign_solutions(nb: nbformat.NotebookNode, start: int, exercises: list[Exercise]) -> None:
    """Give each hidden code cell to the latest exercise stated before it that has none yet.

    Statements batched in one markdown cell take the solutions below them in order; a
    further hidden cell with no exercise left joins the previous exercise (a helper cell).
    """
    for index in range(start, len(nb.cells)):
        if not is_hidden(nb.cells[index]):
            continue
        waiting = [ex for ex in exercises if ex.statement_cell < index and not ex.solution_cells]
        if waiting:
            latest = max(ex.statement_cell for ex in waiting)
            owner = next(ex for ex in waiting if ex.statement_cell == latest)
        else:
            before = [ex for ex in exercises if ex.statement_cell < index]
            if not before:
                continue
            owner = before[-1]
        owner.solution_cells.append(index)


def _next_statement_cell(exercises: list[Exercise], exercise: Exercise, end: int) -> int:
    later = [ex.statement_cell for ex in exercises if ex.statement_cell > exercise.statement_cell]
    return min(later, default=end)


def find_exercises(nb: nbformat.NotebookNode) -> list[Exercise]:
    """The exercises after a chapter's last `## ... Exercises` heading, each located by cell.

    A code exercise's graded cell is the last of its hidden solution cells that calls a
    `check...` function; an exercise with no hidden solution but a visible cell below its
    statement that calls a check (an "answer here" cell) is graded on that cell. Exercises
    with neither are discussion exercises. Returns [] when the chapter has no Exercises
    section.
    """
    start = exercises_start(nb)
    if start is None:
        return []
    exercises = _statements(nb, start)
    _assign_solutions(nb, start, exercises)
    for exercise in exercises:
        for index in reversed(exercise.solution_cells):
            calls = check_calls(nb.cells[index].source)
            if calls:
                exercise.graded_cell, exercise.check_name = index, calls[-1]
                break
        if exercise.solution_cells:
            continue
        end = _next_statement_cell(exercises, exercise, len(nb.cells))
        for index in range(exercise.statement_cell + 1, end):
            cell = nb.cells[index]
            calls = check_calls(cell.source) if cell.cell_type == "code" else []
            if calls:
                exercise.graded_cell, exercise.check_name = index, calls[-1]
    for exercise in exercises:
        exercise.problems.extend(_solution_problems(nb, exercise))
    return exercises


def _ends_with_check(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except SyntaxError:
        lines = [line for line in source.strip().splitlines() if not line.startswith("#")]
        return bool(lines) and bool(CHECK_CALL_LINE.match(lines[-1]))
    return bool(body) and _called_check(body[-1]) is not None


def cell_stdout(cell: nbformat.NotebookNode) -> str:
    """What a code cell printed to stdout, as stored in its outputs."""
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


def _solution_problems(nb: nbformat.NotebookNode, exercise: Exercise) -> list[str]:
    problems = []
    statement = nb.cells[exercise.statement_cell].source
    if exercise.graded_cell is None:
        if exercise.solution_cells:
            problems.append("its hidden solution calls no check...() function, so it is not graded")
        elif "<details>" not in statement and exercise.title.lower() != "discussion":
            problems.append("no hidden solution cell and no <details> answer")
        return problems
    graded = nb.cells[exercise.graded_cell]
    if not exercise.solution_cells:
        problems.append(
            f"answered in the visible cell {exercise.graded_cell} (solution only in markdown); "
            "add a hidden solution cell that ends with the check call"
        )
    elif not _ends_with_check(graded.source):
        problems.append(
            f"solution cell {exercise.graded_cell} does not end with its check call "
            f"{exercise.check_name}(...): move the lines after it above it"
        )
    printed = cell_stdout(graded)
    if exercise.solution_cells and not CORRECT_LINE.search(printed):
        first = printed.strip().splitlines()[0] if printed.strip() else "nothing"
        problems.append(
            f"{exercise.check_name} prints {first[:50]!r}: its line should start with 'correct'"
        )
    return problems


def conformance_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Every departure from the exercise convention in one chapter, as readable lines."""
    if exercises_start(nb) is None:
        return ["no '## Exercises' section"]
    exercises = find_exercises(nb)
    if not exercises:
        return ["the Exercises section has no statement starting **Exercise N (short title).**"]
    problems = [f"{ex.label}: {problem}" for ex in exercises for problem in ex.problems]
    check_cells = {
        name: index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for name in re.findall(r"^def (check\w*)\(", cell.source, re.MULTILINE)
    }
    for exercise in exercises:
        where = check_cells.get(exercise.check_name or "")
        if exercise.check_name and where is None:
            problems.append(f"{exercise.label}: {exercise.check_name} is not defined in a cell")
        elif where is not None and is_hidden(nb.cells[where]):
            problems.append(f"{exercise.label}: {exercise.check_name} is defined in a hidden cell")
    return problems


def main(argv: list[str] | None = None) -> int:
    """List where each chapter's exercises depart from the convention; 1 if any do."""
    from .chapters import notebook_arguments

    parser = argparse.ArgumentParser(
        prog="python -m course.exercises",
        description="List where chapters' exercises depart from the book's exercise convention.",
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = notebook_arguments(parser, args.notebooks)
    departures = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        exercises = find_exercises(nb)
        graded = sum(ex.graded_cell is not None for ex in exercises)
        problems = conformance_problems(nb)
        departures += len(problems)
        print(f"{path.name}: {len(exercises)} exercises, {graded} graded by a check")
        for problem in problems:
            print(f"  - {problem}")
    return 1 if departures else 0


if __name__ == "__main__":
    raise SystemExit(main())
