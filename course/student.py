"""The student edition: copies of the chapters with the solutions removed and the checks kept.

For every code exercise the hidden solution cell becomes a visible stub: imports stay, each
function keeps its signature (and docstring) and gets the body `raise NotImplementedError`,
everything else is removed (comments too, since they often hold the answer), and the final
check call is kept. When the check is given a value rather than a function, the stub starts
with a `raise NotImplementedError(...)` line that names what to define, and a literal
argument of the check call (`check_width(1024)`) is replaced by the check's parameter name.
`<details>` answers in the Exercises section are removed, `<details>` hints are kept.

Run: `python -m course.student [NOTEBOOK ...] [--out student]`. The default output folder,
`student/`, sits beside `notebooks/`, so the chapters' relative paths (`../data`) still work.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
from pathlib import Path

import nbformat

from .chapters import REPO_ROOT, notebook_arguments
from .exercises import (
    CHECK_CALL_LINE,
    Exercise,
    _called_check,
    check_definitions,
    conformance_problems,
    exercises_start,
    find_exercises,
)

DETAILS = re.compile(
    r"<details>\s*<summary>(?P<summary>.*?)</summary>.*?</details>\s*", re.DOTALL | re.IGNORECASE
)
DEFAULT_OUT = REPO_ROOT / "student"


def check_parameters(nb: nbformat.NotebookNode) -> dict[str, list[str]]:
    """Parameter names of every top-level `check...` function defined in the chapter."""
    return {
        name: [argument.arg for argument in node.args.posonlyargs + node.args.args]
        for name, node in check_definitions(nb).items()
    }


def _raise(message: str) -> ast.Raise:
    error = ast.Call(ast.Name("NotImplementedError", ast.Load()), [ast.Constant(message)], [])
    return ast.Raise(exc=error, cause=None)


def _stub_function(node: ast.FunctionDef | ast.AsyncFunctionDef, label: str) -> str:
    stub = copy.deepcopy(node)
    docstring = ast.get_docstring(node, clean=False)
    stub.body = [ast.Expr(ast.Constant(docstring))] if docstring is not None else []
    stub.body.append(_raise(f"{label}: write {node.name}"))
    return ast.unparse(ast.fix_missing_locations(stub))


def _placeholder_call(call: ast.Call, parameters: list[str]) -> ast.Call:
    """The check call with every argument that is not a plain name replaced by a name."""
    placeholder = copy.deepcopy(call)
    for position, argument in enumerate(call.args):
        if not isinstance(argument, ast.Name):
            name = parameters[position] if position < len(parameters) else f"answer_{position + 1}"
            placeholder.args[position] = ast.Name(name, ast.Load())
    for keyword in placeholder.keywords:
        if keyword.arg and not isinstance(keyword.value, ast.Name):
            keyword.value = ast.Name(keyword.arg, ast.Load())
    return placeholder


def stub_solution(
    source: str, label: str, parameters: dict[str, list[str]], keep_check: bool = True
) -> str:
    """The student's version of one solution cell (see the module docstring).

    `parameters` maps check names to their parameter names (`check_parameters`). A cell
    that Python cannot parse (IPython magics) becomes a `raise` line and its last check call.
    """
    lines = [f"# {label}: your answer. Replace each `raise NotImplementedError` with your code."]
    try:
        body = ast.parse(source).body
    except SyntaxError:
        calls = [line for line in source.splitlines() if CHECK_CALL_LINE.match(line)]
        lines.append(ast.unparse(_raise(f"{label}: write your answer here")))
        return "\n".join(lines + (calls[-1:] if keep_check else [])) + "\n"
    checks = [index for index, statement in enumerate(body) if _called_check(statement)]
    last = checks[-1] if checks and keep_check else len(body)
    functions: set[str] = set()
    kept: list[str] = []
    for statement in body[:last]:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            kept.append(ast.unparse(statement))
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            kept.append(_stub_function(statement, label))
            functions.add(statement.name)
    if not checks or not keep_check:
        if not functions:
            kept.append(ast.unparse(_raise(f"{label}: write your answer here")))
        return "\n".join(lines + kept) + "\n"
    call = body[last].value
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    call = _placeholder_call(call, parameters.get(call.func.id, []))
    names = [
        arg.id
        for arg in [*call.args, *(k.value for k in call.keywords)]
        if isinstance(arg, ast.Name)
    ]
    to_define = list(dict.fromkeys(name for name in names if name not in functions))
    if to_define:
        wanted = ", ".join(to_define)
        kept.append(ast.unparse(_raise(f"{label}: define {wanted} here, then delete this line")))
    return "\n\n".join(["\n".join(lines + kept[:1])] + kept[1:] + [ast.unparse(call)]) + "\n"


def _drop_answers(markdown: str) -> str:
    """Remove `<details>` blocks whose summary is not a hint."""

    def keep_hints(match: re.Match) -> str:
        return match.group(0) if "hint" in match.group("summary").lower() else ""

    return DETAILS.sub(keep_hints, markdown).strip()


def student_edition(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[Exercise]]:
    """A copy of a chapter with its solutions stubbed and its answers removed.

    Each stub or answer cell gets metadata `course` (exercise number, label, and whether
    the grader grades it) and the tag `exercise`, so `python -m course.grade` finds it even
    after the student adds cells. Returns the new notebook and the exercises it holds.
    """
    nb = copy.deepcopy(nb)
    exercises = find_exercises(nb)
    parameters = check_parameters(nb)
    for exercise in exercises:
        cells = exercise.solution_cells or (
            [exercise.graded_cell] if exercise.graded_cell is not None else []
        )
        for index in cells:
            cell = nb.cells[index]
            graded = index == exercise.graded_cell
            if exercise.solution_cells:
                cell.source = stub_solution(cell.source, exercise.label, parameters, graded)
                cell.outputs, cell.execution_count = [], None
                cell.metadata.get("jupyter", {}).pop("source_hidden", None)
                if not cell.metadata.get("jupyter", True):
                    del cell.metadata["jupyter"]
            tags = [tag for tag in cell.metadata.get("tags", []) if tag != "solution"]
            cell.metadata["tags"] = [*tags, "exercise"]
            cell.metadata["course"] = {
                "exercise": exercise.number,
                "label": exercise.label,
                "graded": graded,
            }
    start = exercises_start(nb)
    if start is not None:
        for cell in nb.cells[start:]:
            if cell.cell_type == "markdown" and "<details>" in cell.source.lower():
                cell.source = _drop_answers(cell.source)
        nb.cells = nb.cells[:start] + [
            cell for cell in nb.cells[start:] if cell.cell_type != "markdown" or cell.source
        ]
    graded = [exercise.label for exercise in exercises if exercise.graded_cell is not None]
    nb.metadata["course"] = {"edition": "student", "exercises": graded}
    return nb, exercises


def write_student_edition(paths: list[Path], out: Path) -> list[Path]:
    """Write the student edition of each chapter into `out`; returns the written paths.

    Raises ValueError when `out` is the folder of a source chapter: the edition would
    overwrite the book.
    """
    out = Path(out)
    for path in paths:
        if Path(path).resolve().parent == out.resolve():
            raise ValueError(
                f"--out {out} holds the chapter {path.name}: writing there would overwrite the "
                "book; choose another folder (the default is student/)"
            )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb, exercises = student_edition(nbformat.read(path, as_version=4))
        target = out / Path(path).name
        nbformat.write(nb, target)
        written.append(target)
        graded = sum(exercise.graded_cell is not None for exercise in exercises)
        problems = conformance_problems(nbformat.read(path, as_version=4))
        note = f"; {len(problems)} departures from the exercise convention" if problems else ""
        print(f"{target}: {graded} exercises to grade, {len(exercises) - graded} to discuss{note}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: write the student edition of the chosen chapters (default: all)."""
    parser = argparse.ArgumentParser(
        prog="python -m course.student",
        description="Write copies of the chapters with solutions removed and checks kept.",
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: student/")
    args = parser.parse_args(argv)
    paths = notebook_arguments(parser, args.notebooks)
    try:
        write_student_edition(paths, args.out)
    except ValueError as error:
        parser.error(str(error))
    print(
        "Departures are listed by `python -m course.exercises`; grade with `python -m course.grade`."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
