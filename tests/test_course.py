"""The course kit without a browser: exercises, student edition, grader, guide, slide marks.

The grader runs notebooks in real Jupyter kernels: the book's shortest chapter with its own
solutions (full marks) and as a fresh student copy (zero), and small synthetic notebooks that
crash, loop, or ignore the interrupt (reported, never fatal).
"""

import ast
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from course.chapters import discover_chapters, format_seconds, learning_objectives
from course.exercises import conformance_problems, find_exercises, is_hidden
from course.grade import classify, grade_notebook
from course.grade import main as grade_main
from course.guide import SYLLABUS, instructor_guide, unscheduled
from course.slides import mark_in_place, slide_marks, with_slide_marks
from course.student import stub_solution, write_student_edition

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = discover_chapters(ROOT / "notebooks")
SHORT_CHAPTER = ROOT / "notebooks" / "00_how_to_use_this_book.ipynb"
v4 = nbformat.v4


def _hidden(source: str) -> nbformat.NotebookNode:
    return v4.new_code_cell(source, metadata={"jupyter": {"source_hidden": True}})


CHECK = "def check_value(value):\n    assert value == 42, 'not 42 yet'\n    print('correct: 42')"


def _exercise_notebook(*solutions: str) -> nbformat.NotebookNode:
    """A chapter-shaped notebook: title, Exercises heading, a check, one exercise per solution."""
    cells = [v4.new_markdown_cell("# T\n\n## Exercises"), v4.new_code_cell(CHECK)]
    for number, solution in enumerate(solutions, 1):
        cells.append(v4.new_markdown_cell(f"**Exercise {number} (part {number}).** Do it."))
        cells.append(_hidden(solution))
    return v4.new_notebook(cells=cells)


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    """The student edition of every chapter, written once for the whole test session."""
    out = tmp_path_factory.mktemp("student")
    write_student_edition([chapter.path for chapter in CHAPTERS], out)
    return out


# --- reading chapters and their exercises ---------------------------------------------------


def test_every_chapter_has_a_title_objectives_and_a_stored_run_time() -> None:
    for chapter in CHAPTERS:
        assert chapter.title and not chapter.title[0].isdigit(), chapter.path.name
        assert chapter.objectives, f"{chapter.path.name}: no 'You will learn' list found"
        assert chapter.run_seconds and chapter.run_seconds > 0, chapter.path.name


def test_objectives_are_the_list_under_the_you_will_learn_heading() -> None:
    intro = (
        "# 99 · X\n\nSome prose that mentions what you learn.\n\n- not this list\n\n"
        "**You will learn to**\n\n- build a thing;\n- check it\n  against gptlib.\n\nMore."
    )
    nb = v4.new_notebook(cells=[v4.new_markdown_cell(intro), v4.new_code_cell("1")])
    assert learning_objectives(nb) == ["build a thing", "check it against gptlib"]
    assert format_seconds(116.4) == "1 min 56 s" and format_seconds(None) == "not recorded"


def test_exercises_batched_in_one_cell_get_their_solutions_in_order() -> None:
    cells = [
        v4.new_markdown_cell("# T\n\n## Exercises\n\n**1. First.** a\n\n**2. Second.** b"),
        v4.new_code_cell(CHECK),
        _hidden("check_value(1)"),
        v4.new_markdown_cell("**Exercise 3 (discussion).** Why?\n\n<details>x</details>"),
        v4.new_markdown_cell("**Exercise 4 (answer here).** Fill in."),
        v4.new_code_cell("answer = None\ncheck_value(answer)"),
    ]
    cells.insert(3, _hidden("check_value(2)"))
    exercises = find_exercises(v4.new_notebook(cells=cells))
    assert [(e.number, e.title, e.graded_cell) for e in exercises] == [
        ("1", "First", 2),
        ("2", "Second", 3),
        ("3", "discussion", None),
        ("4", "answer here", 6),
    ]
    problems = conformance_problems(v4.new_notebook(cells=cells))
    assert any("Exercise 1" in p and "**Exercise 1 (short title).**" in p for p in problems)
    assert any("Exercise 4" in p and "visible cell" in p for p in problems)


def test_conformance_names_a_solution_that_does_not_end_with_its_check() -> None:
    nb = _exercise_notebook("check_value(42)\nprint('more')")
    nb.cells[-1].outputs = [v4.new_output("stream", name="stdout", text="Exercise 1: correct\n")]
    problems = conformance_problems(nb)
    assert any("does not end with its check call" in p for p in problems), problems
    assert any("should start with 'correct'" in p for p in problems), problems


# --- the student edition ---------------------------------------------------------------------


def test_a_function_solution_becomes_a_stub_that_keeps_its_check() -> None:
    solution = (
        "from math import sqrt\n\n\ndef norm(x: list[float]) -> float:\n"
        '    """Euclidean norm."""\n    return sqrt(sum(v * v for v in x))  # the answer\n\n\n'
        "check_norm(norm)\nprint('after the check')\n"
    )
    stub = stub_solution(solution, "Exercise 1", {"check_norm": ["norm"]})
    assert "from math import sqrt" in stub and "def norm(x: list[float]) -> float:" in stub
    assert "Euclidean norm." in stub and "raise NotImplementedError" in stub
    assert "sum(" not in stub and "the answer" not in stub and "after the check" not in stub
    assert stub.rstrip().endswith("check_norm(norm)")
    ast.parse(stub)


def test_a_value_solution_becomes_a_raise_and_a_literal_argument_a_name() -> None:
    stub = stub_solution("check_width(2 * 4 * 384 // 3)", "Exercise 2", {"check_width": ["d_ff"]})
    assert "384" not in stub
    assert stub.rstrip().endswith("check_width(d_ff)")
    assert re.search(r"raise NotImplementedError\(.*define d_ff", stub)
    magic = stub_solution("%time x = 1\ncheck_value(x)", "Exercise 3", {})
    assert "%time" not in magic and magic.rstrip().endswith("check_value(x)")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda chapter: chapter.path.name)
def test_student_edition_removes_every_solution_and_keeps_every_check(chapter, student_dir):
    book = nbformat.read(chapter.path, as_version=4)
    student = nbformat.read(student_dir / chapter.path.name, as_version=4)
    marked = [cell for cell in student.cells if cell.metadata.get("course", {}).get("graded")]
    assert len(marked) == len(chapter.graded_exercises)
    # What the student sees of an exercise: its statement and its cell (the checks may well
    # compute the expected answer themselves; they are kept on purpose).
    exercise_text = "\n".join(
        cell.source
        for cell in student.cells
        if "course" in cell.metadata or (cell.cell_type == "markdown" and "**" in cell.source)
    )
    statements = "\n".join(cell.source for cell in book.cells if cell.cell_type == "markdown")
    for exercise in chapter.exercises:
        for index in exercise.solution_cells:
            answer_lines = {
                line.strip()
                for line in book.cells[index].source.splitlines()
                if len(line.strip()) > 12
                and not re.match(r"(import |from |def |check\w*\(|#|@)", line.strip())
            }
            # A line the book's own statement already gives (e.g. "seed with
            # `torch.manual_seed(0)`") is an instruction, not a leaked answer.
            leaked = [
                line for line in answer_lines if line in exercise_text and line not in statements
            ]
            assert not leaked, f"{exercise.label}: solution lines left in the student copy {leaked}"
    for cell, original in zip(marked, chapter.graded_exercises, strict=True):
        assert not is_hidden(cell), f"{original.label}: the answer cell is still collapsed"
        assert f"{original.check_name}(" in cell.source, f"{original.label} lost its check call"
        if original.solution_cells:
            assert cell.outputs == [], f"{original.label}: the solution's output was kept"
    details = [
        cell.source
        for cell in student.cells
        if cell.cell_type == "markdown" and "<details" in cell.source
    ]
    assert all("hint" in block.lower() for block in details), "an answer in <details> was kept"


def test_student_edition_refuses_to_overwrite_the_book() -> None:
    with pytest.raises(ValueError, match="overwrite the book"):
        write_student_edition([SHORT_CHAPTER], SHORT_CHAPTER.parent)


# --- the grader ------------------------------------------------------------------------------


def test_the_books_own_solutions_score_full_marks() -> None:
    report = grade_notebook(SHORT_CHAPTER, timeout=300)
    expected = len(find_exercises(nbformat.read(SHORT_CHAPTER, as_version=4)))
    assert len(report.results) == expected > 0
    assert report.correct == expected, report.format()


def test_a_fresh_student_copy_scores_zero_and_an_answer_then_counts(student_dir, tmp_path):
    copy = student_dir / SHORT_CHAPTER.name
    report = grade_notebook(copy, timeout=300)
    assert report.correct == 0 and len(report.results) == 3, report.format()
    assert {result.outcome for result in report.results} == {"not yet"}
    assert not report.notes, report.notes
    # A student answers exercise 2 correctly and exercise 3 wrongly.
    nb = nbformat.read(copy, as_version=4)
    cells = [cell for cell in nb.cells if cell.metadata.get("course", {}).get("graded")]
    cells[1].source = (
        "def small_gpt_count():\n"
        "    config = GPTConfig.from_preset('gpt2', n_layer=4, n_head=4, n_embd=128,"
        " block_size=64, vocab_size=256)\n"
        "    return GPT(config).num_params()\n\n"
        "check_count(small_gpt_count)"
    )
    cells[2].source = (
        "def story_batch():\n"
        "    x = torch.zeros(8, 32, dtype=torch.long)\n"
        "    return x, x + 1\n\n"
        "check_batch(story_batch)"
    )
    nbformat.write(nb, tmp_path / SHORT_CHAPTER.name)
    outcomes = [r.outcome for r in grade_notebook(tmp_path / SHORT_CHAPTER.name).results]
    assert outcomes == ["not yet", "correct", "not yet"]


def test_a_crash_and_a_loop_are_reported_not_fatal(tmp_path) -> None:
    pid_file = tmp_path / "pid.txt"
    looping = _exercise_notebook(
        f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ncheck_value(42)",
        "while True:\n    pass\ncheck_value(42)",
        "1 / 0\ncheck_value(42)",
        "check_value(41)",
        "check_value(42)",
    )
    nbformat.write(looping, tmp_path / "loop.ipynb")
    # Limits are short to keep the test quick, yet far above what the other cells need.
    report = grade_notebook(tmp_path / "loop.ipynb", timeout=10, cwd=tmp_path)
    assert [r.outcome for r in report.results] == [
        "correct",
        "error",
        "error",
        "not yet",
        "correct",
    ]
    assert "ran longer than 10 s" in report.results[1].detail
    assert "ZeroDivisionError" in report.results[2].detail
    assert report.results[3].detail == "not 42 yet"
    assert int(pid_file.read_text()) != os.getpid(), "the notebook ran in the grader's process"

    crashing = _exercise_notebook(
        "check_value(42)", "import os\nos._exit(1)\ncheck_value(42)", "check_value(42)"
    )
    nbformat.write(crashing, tmp_path / "crash.ipynb")
    report = grade_notebook(tmp_path / "crash.ipynb", timeout=30, cwd=tmp_path)
    assert [r.outcome for r in report.results] == ["correct", "error", "error"]
    assert "kernel died" in report.notes[0] and "not run" in report.results[2].detail


def test_a_cell_that_ignores_the_interrupt_stops_the_grading_politely(tmp_path) -> None:
    stubborn = _exercise_notebook(
        "check_value(42)",
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.05)\ncheck_value(42)",
        "check_value(42)",
    )
    nbformat.write(stubborn, tmp_path / "stubborn.ipynb")
    json_path = tmp_path / "results.json"
    assert (
        grade_main([str(tmp_path / "stubborn.ipynb"), "--timeout", "5", "--json", str(json_path)])
        == 0
    )
    (result,) = json.loads(json_path.read_text())
    assert [r["outcome"] for r in result["results"]] == ["correct", "error", "error"]
    assert any("did not stop when interrupted" in note for note in result["notes"])


def test_an_edited_check_is_flagged(student_dir, tmp_path) -> None:
    nb = nbformat.read(student_dir / SHORT_CHAPTER.name, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("assert count == 834_304", "assert True")
    nbformat.write(nb, tmp_path / SHORT_CHAPTER.name)
    from course.grade import edited_checks

    assert edited_checks(nb, SHORT_CHAPTER) == ["check_count"]


def test_outcomes_follow_the_convention() -> None:
    assert classify({"status": "ok"}, "correct: yes\n", 5, "")[0] == "correct"
    assert classify({"status": "ok"}, "exercise 1: not yet\n", 5, "")[0] == "not yet"
    assert classify({"status": "error", "ename": "NotImplementedError"}, "", 5, "")[0] == "not yet"
    assert classify({"status": "error", "ename": "NameError", "evalue": "x"}, "", 5, "") == (
        "error",
        "NameError: x",
    )
    assert classify(None, "", 5, "kernel died")[1] == "not run: kernel died"


# --- the instructor guide and slide marks -----------------------------------------------------


def test_the_syllabus_schedules_every_chapter_in_10_to_14_weeks() -> None:
    assert unscheduled(CHAPTERS) == [], "add the new chapter to course.guide.SYLLABUS"
    assert 10 <= len(SYLLABUS) <= 14
    guide = instructor_guide(CHAPTERS)
    for chapter in CHAPTERS:
        assert f"### {chapter.number} · {chapter.title}" in guide
        assert chapter.objectives[0] in guide
        assert format_seconds(chapter.run_seconds) in guide
    for heading in ("Who the course is for", "Syllabus", "Exercises and grading", "Reusing"):
        assert f"## {heading}" in guide
    assert "MIT" in guide and "CC BY 4.0" in guide


def test_headings_decide_the_slides_and_a_teachers_marks_win(tmp_path) -> None:
    cells = [
        v4.new_markdown_cell("# Title"),
        v4.new_code_cell("x = 1"),
        v4.new_markdown_cell("## Section"),
        v4.new_code_cell("y = 2"),
        v4.new_markdown_cell("prose after code"),
        v4.new_markdown_cell("### Sub-section"),
        _hidden("solution = 3"),
    ]
    nb = v4.new_notebook(cells=cells)
    assert slide_marks(nb) == ["slide", "-", "slide", "-", "subslide", "subslide", "skip"]
    nb.cells[1].metadata["slideshow"] = {"slide_type": "fragment"}
    assert with_slide_marks(nb).cells[1].metadata["slideshow"]["slide_type"] == "fragment"
    assert "slideshow" not in with_slide_marks(nb).cells[2].metadata
    del nb.cells[1].metadata["slideshow"]
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert mark_in_place(tmp_path / "x.ipynb") == len(cells)
    marked = nbformat.read(tmp_path / "x.ipynb", as_version=4)
    assert [c.source for c in marked.cells] == [c.source for c in cells]
    assert mark_in_place(tmp_path / "x.ipynb") == 0, "marks must not be overwritten"


def test_a_file_that_is_not_a_notebook_is_reported(tmp_path, capsys) -> None:
    (tmp_path / "broken.ipynb").write_text("{ not json", encoding="utf-8")
    assert grade_main([str(tmp_path / "broken.ipynb")]) == 0
    assert "is not a readable Jupyter notebook" in capsys.readouterr().out
