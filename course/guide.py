"""The instructor guide: hand-written advice plus tables generated from the chapters.

The prose lives in `course/instructor_guide.md`; its markers `<!-- course:syllabus -->` and
`<!-- course:chapters -->` are replaced by the syllabus table and by each chapter's
objectives, run time and exercises, read from the notebooks. `SYLLABUS` maps the weeks of a
14-week course to chapter numbers; a chapter that does not exist yet shows as "in preparation",
and a chapter missing from it is an error, so a new chapter cannot be left out of the course.

Run: `python -m course.guide [--out FILE]` (the site builds it as a page of its own).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

from .chapters import NOTEBOOKS_DIR, Chapter, discover_chapters, format_seconds
from .exercises import conformance_problems

TEMPLATE = Path(__file__).with_name("instructor_guide.md")

# (week, theme, chapter numbers): the order of the book, two short chapters sharing a week.
SYLLABUS: list[tuple[int, str, list[str]]] = [
    (1, "Orientation and a short history", ["00", "01"]),
    (2, "A whole GPT in a minute", ["02"]),
    (3, "Tokenization", ["03"]),
    (4, "Attention", ["04"]),
    (5, "Positional encodings", ["05"]),
    (6, "The transformer block", ["06"]),
    (7, "GPT-1 and GPT-2", ["07", "08"]),
    (8, "GPT-3 and scaling laws", ["09"]),
    (9, "The open replications; real weights", ["10", "A"]),
    (10, "Codex: language models for code", ["11"]),
    (11, "InstructGPT: learning from human feedback", ["12"]),
    (12, "The GPT-4 era", ["13"]),
    (13, "Inference", ["14"]),
    (14, "Attention maps and induction heads; projects", ["15"]),
]


def unscheduled(chapters: list[Chapter]) -> list[str]:
    """Chapter numbers that exist in the book but have no week in SYLLABUS."""
    scheduled = {number for _, _, numbers in SYLLABUS for number in numbers}
    return [chapter.number for chapter in chapters if chapter.number not in scheduled]


def _link(chapter: Chapter, short: bool = False) -> str:
    title = chapter.title.split(":")[0] if short else chapter.title
    return f"[{chapter.number} · {title}]({chapter.name}.ipynb)"


def _exercise_summary(chapter: Chapter) -> str:
    graded = len(chapter.graded_exercises)
    discussion = len(chapter.exercises) - graded
    parts = [f"{graded} graded"] + ([f"{discussion} discussion"] if discussion else [])
    return ", ".join(parts)


def syllabus_table(chapters: list[Chapter]) -> str:
    """The week-by-week table in Markdown; raises ValueError if a chapter has no week."""
    missing = unscheduled(chapters)
    if missing:
        raise ValueError(
            f"chapters {', '.join(missing)} have no week in course.guide.SYLLABUS: add them"
        )
    by_number = {chapter.number: chapter for chapter in chapters}
    rows = ["| week | theme | chapters | run time | exercises |", "|---|---|---|---|---|"]
    for week, theme, numbers in SYLLABUS:
        present = [by_number[number] for number in numbers if number in by_number]
        names = [
            _link(by_number[n], short=True) if n in by_number else f"{n} (in preparation)"
            for n in numbers
        ]
        times = [chapter.run_seconds for chapter in present]
        total = None if not times or None in times else sum(times)
        exercises = "; ".join(f"{c.number}: {_exercise_summary(c)}" for c in present) or "-"
        run_time = format_seconds(total) if present else "-"
        rows.append(f"| {week} | {theme} | {'<br>'.join(names)} | {run_time} | {exercises} |")
    return "\n".join(rows)


def chapter_sections(chapters: list[Chapter]) -> str:
    """One section per chapter: run time, gptlib modules, objectives and exercises."""
    sections = ["## Chapter by chapter"]
    for chapter in chapters:
        lines = [f"### {chapter.number} · {chapter.title}", ""]
        lines.append(f"- **Run time:** {format_seconds(chapter.run_seconds)} (as stored)")
        if chapter.modules:
            lines.append(f"- **gptlib modules:** {chapter.modules}")
        lines.append(f"- **Chapter:** {_link(chapter)}")
        lines += ["", "**Objectives** (from the chapter's introduction):", ""]
        if chapter.objectives:
            lines += [f"- {objective}" for objective in chapter.objectives]
        else:
            lines.append("- (the chapter's opening cells list no objectives)")
        lines += ["", "**Exercises.**", ""]
        for exercise in chapter.exercises:
            how = f"graded by `{exercise.check_name}`" if exercise.check_name else "discussion"
            lines.append(f"- {exercise.label}: {how}")
        if not chapter.exercises:
            lines.append("- (none found after the chapter's `## Exercises` heading)")
        sections.append("\n".join(lines))
    departures = []
    for chapter in chapters:
        problems = conformance_problems(nbformat.read(chapter.path, as_version=4))
        departures += [f"- {chapter.number}, {problem}" for problem in problems]
    sections.append(
        "## Where chapters depart from the convention\n\n"
        "The tools tolerate these, but a chapter that follows the convention grades more "
        "reliably (`python -m course.exercises` prints this list).\n\n"
        + ("\n".join(departures) if departures else "None: every chapter follows it.")
    )
    return "\n\n".join(sections)


def instructor_guide(chapters: list[Chapter], link_suffix: str = ".ipynb") -> str:
    """The whole guide in Markdown; chapter links end in `link_suffix` (".html" for the web)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text = text.replace("<!-- course:syllabus -->", syllabus_table(chapters))
    text = text.replace("<!-- course:chapters -->", chapter_sections(chapters))
    return text.replace(".ipynb)", f"{link_suffix})") if link_suffix != ".ipynb" else text


def main(argv: list[str] | None = None) -> int:
    """Command line: print the instructor guide, or write it to --out."""
    parser = argparse.ArgumentParser(
        prog="python -m course.guide", description="Write the instructor guide (Markdown)."
    )
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR)
    parser.add_argument("--out", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    text = instructor_guide(discover_chapters(args.notebooks), link_suffix=".ipynb")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
