"""Hygiene of the stored chapters, and of the harness that re-runs them.

nbval (configured in pyproject.toml) re-runs every notebook; these tests check what nbval does
not: that what a reader sees stored in a notebook comes from one clean top-to-bottom run, that
each chapter follows the book's shape, and that README.md and gptlib point at chapters that exist.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAME_PATTERN = re.compile(r"^(\d\d|[A-Z])_[a-z0-9_]+\.ipynb$")
IMPORTS_GPTLIB = re.compile(r"^\s*(import gptlib\b|from gptlib(\.\w+)* import )", re.MULTILINE)
# Absolute paths leak one machine's layout into the book and break on every other machine.
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/work/|/home/|/Users/|/root/|/tmp/|/mnt/|[A-Z]:\\\\)")
MAX_NOTEBOOK_BYTES = 5_000_000


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


def _h2_titles(nb: nbformat.NotebookNode) -> list[str]:
    return [
        line[3:].strip()
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    ]


def test_the_book_has_chapters() -> None:
    names = [path.name for path in NOTEBOOKS]
    assert "00_how_to_use_this_book.ipynb" in names
    assert "01_history.ipynb" in names


parametrize_notebooks = pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)


@parametrize_notebooks
def test_name_is_numbered(path: Path) -> None:
    assert NAME_PATTERN.match(path.name), (
        f"{path.name}: chapters are named NN_short_name.ipynb (or A_name.ipynb for an appendix), "
        "lower case with underscores."
    )


@parametrize_notebooks
def test_is_a_valid_notebook_of_reasonable_size(path: Path) -> None:
    nbformat.validate(_read(path))
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, (
        f"{path.name} is {size / 1e6:.1f} MB; shrink its figures (lower dpi, fewer plots)."
    )


@parametrize_notebooks
def test_imports_gptlib(path: Path) -> None:
    assert any(IMPORTS_GPTLIB.search(cell.source) for cell in _code_cells(_read(path))), (
        f"{path.name}: no code cell imports gptlib; every chapter uses the book's library."
    )


@parametrize_notebooks
def test_outputs_come_from_one_clean_in_order_run(path: Path) -> None:
    cells = _code_cells(_read(path))
    counts = [cell.execution_count for cell in cells]
    fix = (
        f"re-run it top to bottom: jupyter nbconvert --to notebook --execute --inplace {path.name}"
    )
    assert None not in counts, f"{path.name}: {counts.count(None)} code cell(s) never ran; {fix}"
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts} are not 1, 2, 3, ...; {fix}"
    )
    for cell in cells:
        for output in cell.outputs:
            assert output.output_type != "error", (
                f"{path.name}: cell {cell.execution_count} is stored with an error: "
                f"{output.get('ename')}: {output.get('evalue')}"
            )
            if output.output_type == "execute_result":
                assert output.execution_count == cell.execution_count, (
                    f"{path.name}: cell {cell.execution_count} shows a result from another run; "
                    f"{fix}"
                )


@parametrize_notebooks
def test_no_absolute_paths(path: Path) -> None:
    for index, cell in enumerate(_read(path).cells):
        texts = [cell.source]
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                texts.append(output.text)
            elif "data" in output:
                texts.append(output.data.get("text/plain", ""))
        for text in texts:
            match = ABSOLUTE_PATH.search(text)
            assert not match, (
                f"{path.name}, cell {index}: absolute path {match.group(0)!r}...; use paths "
                'relative to the notebooks/ folder, e.g. Path("..") / "data".'
            )


@parametrize_notebooks
def test_opens_with_a_title_that_names_its_gptlib_modules(path: Path) -> None:
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), (
        f"{path.name}: the first cell must be a markdown title ('# ...')."
    )
    first_code = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"), 1)
    intro = "\n".join(cell.source for cell in nb.cells[:first_code])
    assert "gptlib" in intro, (
        f"{path.name}: the introduction (before the first code cell) should say which gptlib "
        "modules the chapter uses."
    )


@parametrize_notebooks
def test_ends_with_summary_then_exercises_with_solutions(path: Path) -> None:
    nb = _read(path)
    titles = [title.lower() for title in _h2_titles(nb)]
    assert len(titles) >= 2 and "summary" in titles[-2] and "exercises" in titles[-1], (
        f"{path.name}: the last two '## ' sections must be a Summary and then Exercises; "
        f"found {_h2_titles(nb)[-2:]}."
    )
    start = max(
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown" and re.search(r"^## .*exercises", cell.source, re.I | re.M)
    )
    exercises = nb.cells[start:]
    has_solution = any(
        (cell.cell_type == "markdown" and "<details>" in cell.source)
        or (cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden"))
        for cell in exercises
    )
    assert has_solution, (
        f"{path.name}: exercises need solutions a reader can reveal: a <details> block in a "
        "markdown cell, or a code cell hidden by default (metadata jupyter.source_hidden)."
    )


def test_readme_lists_every_chapter_and_only_existing_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"notebooks/([\w]+\.ipynb)", readme))
    names = {path.name for path in NOTEBOOKS}
    assert not names - linked, f"README.md's chapter table misses {sorted(names - linked)}."
    assert not linked - names, f"README.md links chapters that do not exist: {linked - names}."


def test_gptlib_backlinks_name_existing_chapters() -> None:
    names = {path.name for path in NOTEBOOKS}
    for module in sorted((ROOT / "gptlib").glob("*.py")):
        for name in set(re.findall(r"notebooks/(\w+\.ipynb)", module.read_text(encoding="utf-8"))):
            assert name in names, f"gptlib/{module.name} names notebooks/{name}, which is missing."


def _sanitize(text: str) -> str:
    config = (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    for regex, replace in get_sanitize_patterns(config):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("<gptlib.model.GPT object at 0x7f3a2b1c9d00>", "<gptlib.model.GPT object at 0x7f00aa11>"),
        ("<Figure size 640x480 with 1 Axes>", "<Figure size 1000x300 with 3 Axes>"),
        (
            "train:  40%|####      | 4/10 [00:01<00:02,  2.91it/s]",
            "train:  40%|####      | 4/10 [00:03<00:05,  1.07it/s]",
        ),
        ("CPU times: user 1.2 s, sys: 3 ms", "CPU times: user 980 ms, sys: 1 ms"),
        ("Wall time: 1.23 s", "Wall time: 870 ms"),
        (
            "generated 500 tokens in 1.52 s (329.0 tokens/s)",
            "generated 500 tokens in 2 s (250 tokens/s)",
        ),
    ],
)
def test_sanitize_file_masks_what_varies_between_runs(first: str, second: str) -> None:
    assert _sanitize(first) == _sanitize(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("shape (2, 8, 64)", "shape (2, 8, 65)"),
        ("0x41 is 'A'", "0x42 is 'B'"),
        ("5 steps", "6 steps"),
    ],
)
def test_sanitize_file_keeps_what_a_chapter_teaches(first: str, second: str) -> None:
    assert _sanitize(first) != _sanitize(second)


def _tiny_notebook(stdout_text: str, stderr_text: str, stored_stdout: str, stored_stderr: str):
    source = (
        "# NBVAL_CHECK_OUTPUT\nimport sys\n"
        f"print({stdout_text!r})\nprint({stderr_text!r}, file=sys.stderr)"
    )
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=stored_stdout + "\n"),
        nbformat.v4.new_output("stream", name="stderr", text=stored_stderr + "\n"),
    ]
    return nbformat.v4.new_notebook(cells=[cell])


def test_nbval_harness_ignores_stderr_and_catches_stdout_changes_and_timeouts(
    tmp_path: Path,
) -> None:
    # One-cell notebooks: one differs from its stored output only in stderr and in a memory
    # address (must pass), one in what it prints to stdout (must fail), and one runs past the
    # cell timeout but swallows the interrupt, as a training loop that saves on Ctrl-C does
    # (must fail).
    cases = {
        "ignored.ipynb": ("at 0x7f0000001234", "UserWarning: one", "at 0x7fffffff9999", "other"),
        "caught.ipynb": ("answer 42", "warning", "answer 43", "warning"),
    }
    for name, texts in cases.items():
        nbformat.write(_tiny_notebook(*texts), tmp_path / name)
    slow = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('stopped')"
    cell = nbformat.v4.new_code_cell(slow, execution_count=1)
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "slow.ipynb")
    # Run pytest the way the README does, with this repository's configuration and conftest.py.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
         str(ROOT), "-p", "conftest", "-p", "no:cacheprovider", "-rA", "--color=no",
         "--nbval-cell-timeout=5", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert re.search(r"^PASSED .*ignored\.ipynb::Cell 0", report, re.M), report[-4000:]
    assert re.search(r"^FAILED .*caught\.ipynb::Cell 0", report, re.M), report[-4000:]
    assert "Cell outputs differ" in report
    assert re.search(r"^FAILED .*slow\.ipynb::Cell 0 - .*ran longer than", report, re.M), report


def test_ci_script_runs_exactly_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [
        line
        for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", quickstart, re.S)
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(commands) == 2, f"README's Quickstart must hold exactly two commands: {commands}"
    install, test = commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines, f".ci/run must run the README's test command {test!r} as it is."
    for step in install.split(" && "):
        if "pip install" in step:
            assert step in ci_lines, f".ci/run must install as the README does: {step!r}."
