"""The book cites papers, never files a reader does not have, and its bibliography is complete.

A reader of the repository (a student offline, a teacher with a copy) has nothing beyond it, so
no chapter, module, test, data file, benchmark or README may point at a path outside it: no
project notes beside the repository, no absolute path of one machine. Every source is cited as
*Author et al. Year* with its section or table and listed in notebooks/references.md, which
stays sorted by first author, then year.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "notebooks" / "references.md"
SCANNED_FOLDERS = ("notebooks", "gptlib", "tests", "data", "benchmarks")
SCANNED_ROOT_FILES = ("README.md", "conftest.py", "pyproject.toml", "requirements.txt")
TEXT_SUFFIXES = {".ipynb", ".py", ".md", ".csv", ".json", ".txt", ".cfg", ".toml"}

# What citing something outside the repository looks like. The patterns are built so that this
# file does not match itself.
OUTSIDE = {
    "the project's notes on the GPT family": re.compile(r"fact[\s_-]?sheet", re.IGNORECASE),
    "the file of those notes": re.compile(r"gpt_family\.md"),
    "the folder beside the repository": re.compile(
        r"\.\./shared\b|\bshared/reference\b|\breference/gpt_family\b"
    ),
    "an absolute path of one machine": re.compile(
        r"(?<![\w.~])/(?:work|home|Users|root|mnt|tmp|private|var/folders)/[\w.-]"
        r"|\b[A-Z]:\\\\?[\w.-]"
    ),
}
# "Vaswani et al. 2017", "Kaplan et al. (2020", "Zhang & Sennrich 2019", "Wang and Komatsuzaki 2021"
# A citation may break across a line of a Markdown cell ("Touvron et\nal. 2023"): any whitespace.
ET_AL = re.compile(r"\b((?:Le |de |van |von )?[A-Z][\w'-]+)\s+et\s+al\.?,?\s+\(?((?:19|20)\d\d)\b")
TWO_AUTHORS = re.compile(r"\b([A-Z][a-z]+)\s+(?:&|and)\s+([A-Z][a-z]+),?\s+\(?((?:19|20)\d\d)\b")
ENTRY = re.compile(r"^- \*\*(.+?)\.\*\*", re.MULTILINE)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_ROOT_FILES if (ROOT / name).is_file()]
    for folder in SCANNED_FOLDERS:
        files += sorted(
            path
            for path in (ROOT / folder).rglob("*")
            if path.is_file()
            and path.suffix in TEXT_SUFFIXES
            and not any(part.startswith(".") or part == "__pycache__" for part in path.parts)
        )
    return files


def _texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) pairs: a notebook gives each cell's source and stored outputs."""
    if path.suffix != ".ipynb":
        return [("", path.read_text(encoding="utf-8"))]
    texts = []
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        texts.append((f"cell {index}", "".join(cell["source"])))
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append((f"cell {index} output", "".join(output["text"])))
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in output.get("data", {}):
                    texts.append((f"cell {index} output", "".join(output["data"][kind])))
    return texts


SCANNED = _scanned_files()


def test_the_scan_covers_the_book() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in SCANNED}
    for expected in ("README.md", "notebooks/01_history.ipynb", "gptlib/model.py",
                     "data/gpt_family.csv", "data/README.md", "tests/test_data.py"):  # fmt: skip
        assert expected in names, f"{expected} is not scanned"


@pytest.mark.parametrize("path", SCANNED, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_cites_nothing_outside_the_repository(path: Path) -> None:
    found = []
    for where, text in _texts(path):
        for what, pattern in OUTSIDE.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{where} line {line}: {match.group(0)!r} ({what})")
    assert not found, (
        f"{path.relative_to(ROOT)} points at something a reader of the repository does not have; "
        "cite the paper or model card itself (Author et al. Year, §/Table) and add it to "
        "notebooks/references.md:\n" + "\n".join(found)
    )


def _cited_keys() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for path in SCANNED:
        if path == REFERENCES:
            continue
        for _, text in _texts(path):
            for name, year in ET_AL.findall(text):
                cited.setdefault(f"{name} et al. {year}", set()).add(path.name)
            for first, second, year in TWO_AUTHORS.findall(text):
                cited.setdefault(f"{first} and {second} {year}", set()).add(path.name)
    return cited


def _entries() -> list[str]:
    return ENTRY.findall(HTML_COMMENT.sub("", REFERENCES.read_text(encoding="utf-8")))


def test_every_cited_paper_is_in_the_bibliography() -> None:
    keys = [re.sub(r" \(.*\)$", "", entry) for entry in _entries()]
    missing = {
        key: sorted(files)
        for key, files in _cited_keys().items()
        if not any(entry == key for entry in keys)
        # Prose that merely mentions authors ("Press et al. take the slopes ...") has no year.
    }
    assert not missing, (
        "cited but missing from notebooks/references.md (add a full entry, in order): "
        + "; ".join(f"{key} in {', '.join(files)}" for key, files in sorted(missing.items()))
    )


def _sort_key(entry: str) -> tuple[str, int, str]:
    year = re.search(r"\b(?:19|20)\d\d\b", entry)
    assert year, f"bibliography entry {entry!r} has no year"
    first_author = re.split(r" et al\.| and | & | (?:19|20)\d\d", entry)[0]
    return first_author.lower(), int(year.group(0)), entry.lower()


def test_bibliography_is_sorted_by_first_author_then_year_without_duplicates() -> None:
    entries = _entries()
    assert len(entries) >= 30, "notebooks/references.md lost its entries"
    assert len(set(entries)) == len(entries), "an entry appears twice"
    assert entries == sorted(entries, key=_sort_key), (
        "keep notebooks/references.md sorted by first author, then year; expected order:\n"
        + "\n".join(sorted(entries, key=_sort_key))
    )


# Examples are assembled from pieces so that this file does not cite what it forbids.
NOTES, FOLDER = "fact" + " sheet", ".." + "/shared"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (f"see the {NOTES} §3", "the project's notes on the GPT family"),
        (f"Figures: {FOLDER}/reference/gpt_" + "family.md §10", "the file of those notes"),
        (f"Figures: {FOLDER}/reference/ §10", "the folder beside the repository"),
        ("(`shared" + "/reference/x.md`)", "the folder beside the repository"),
        ('Path("/' + 'work/main/data")', "an absolute path of one machine"),
        ("C:" + "\\\\Users\\\\me", "an absolute path of one machine"),
    ],
)
def test_the_patterns_catch_what_they_name(text: str, what: str) -> None:
    assert OUTSIDE[what].search(text)


@pytest.mark.parametrize(
    "text",
    [
        "Brown et al. 2020, Table 2.1",
        'Path("..") / "data" / "gpt_family.csv"',
        "#!/usr/bin/env bash",
        "key/value heads shared across query heads",
        "tokens/s and 3/4 of the time",
    ],
)
def test_the_patterns_leave_ordinary_text_alone(text: str) -> None:
    assert not any(pattern.search(text) for pattern in OUTSIDE.values())


def test_citation_patterns_find_the_common_forms() -> None:
    text = "(Vaswani et al. 2017, §3.2); Kaplan et al. (2020); Zhang & Sennrich 2019"
    assert ET_AL.findall(text) == [("Vaswani", "2017"), ("Kaplan", "2020")]
    assert TWO_AUTHORS.findall(text) == [("Zhang", "Sennrich", "2019")]
    assert ET_AL.findall("Le Scao et al. 2022") == [("Le Scao", "2022")]
    assert ET_AL.findall("(Touvron et\nal. 2023, §2)") == [("Touvron", "2023")]


USED_IN = re.compile(r"Used in:(.*?)(?=\n- \*\*|\Z)", re.DOTALL)
CHAPTER = re.compile(r"(?<![\w.§])(\d\d|A)(?![\w.])")


def _outside_parentheses(text: str) -> str:
    depth, kept = 0, []
    for char in text:
        depth += char == "("
        if depth == 0:
            kept.append(char)
        depth -= char == ")" and depth > 0
    return "".join(kept)


def _used_in() -> dict[str, set[str]]:
    """Bibliography key ("Brown et al. 2020") -> chapters its "Used in:" names ("01", "A")."""
    text = HTML_COMMENT.sub("", REFERENCES.read_text(encoding="utf-8"))
    used: dict[str, set[str]] = {}
    for match in ENTRY.finditer(text):
        key = re.sub(r" \(.*\)$", "", match.group(1))
        rest = text[match.end() :].split("\n- **", 1)[0]
        found = USED_IN.search(rest)
        chapters = set(CHAPTER.findall(_outside_parentheses(found.group(1)))) if found else set()
        used.setdefault(key, set()).update(chapters)
    return used


def _citation_pattern(key: str) -> re.Pattern[str]:
    """How a chapter cites a bibliography key: "Brown et al. 2020", "Brown et al. (2020",
    "Zhang & Sennrich 2019", "Shazeer 2019", "Shazeer (2019"."""
    names, year = key.rsplit(" ", 1)
    names = re.escape(names).replace(r"\ and\ ", r" (?:&|and) ").replace(r"et\ al\.", r"et al\.?")
    names = names.replace(r"\ ", r"\s+").replace(" ", r"\s+")
    return re.compile(rf"(?<![\w-]){names},?\s+\(?{year}\b")


def test_used_in_names_exactly_the_chapters_that_cite_the_entry() -> None:
    used = _used_in()
    citing: dict[str, set[str]] = {}
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for key in used:
        pattern = _citation_pattern(key)
        for path in notebooks:
            if any(pattern.search(text) for _, text in _texts(path)):
                citing.setdefault(key, set()).add(path.name.split("_")[0])
    wrong = []
    for key, chapters in sorted(used.items()):
        actual = citing.get(key, set())
        if chapters != actual:
            wrong.append(
                f"{key}: 'Used in' says {sorted(chapters) or 'nothing'}, "
                f"cited in {sorted(actual) or 'no chapter'}"
            )
    assert not wrong, "fix the 'Used in:' lists of notebooks/references.md:\n" + "\n".join(wrong)


def test_used_in_parsing() -> None:
    assert _citation_pattern("Zhang and Sennrich 2019").search("(Zhang & Sennrich 2019, §3)")
    assert _citation_pattern("Brown et al. 2020").search("Brown et al. (2020, Table 2.1)")
    assert _citation_pattern("Shazeer 2019").search("multi-query attention (Shazeer 2019)")
    assert not _citation_pattern("Shazeer 2019").search("Shazeer 2020")
    assert _citation_pattern("Touvron et al. 2023").search("(Touvron et\nal. 2023, §2)")
    assert _outside_parentheses("01 (§3 (a)), 12 (Table 2), A") == "01 , 12 , A"
    assert CHAPTER.findall("01 , 12 , A") == ["01", "12", "A"]
