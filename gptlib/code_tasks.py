"""A seeded family of small Python programming problems in HumanEval's format, for a code model.

Taught in the Codex chapter (chapter 11).

Each problem (a `CodeTask`) is what Chen et al. 2021 (§2.2 and Figure 2) built HumanEval from:
a function signature and a docstring with examples (the *prompt*), a reference solution (the
*body*), and *hidden* tests on other inputs than the examples. Here the problems come from a
small grammar written for this book, so every machine makes the same ones for a seed:

- lists of integers: keep, transform, count, add up, multiply, find the first ...; each
  combines a *predicate* ("even", "greater than 4", "divisible by 3", ...) with an
  *aggregate* ("the sum", "how many", "the largest", ...) or a *transform* ("squared",
  "increased by 2", ...);
- integers: one- and two-step arithmetic, digit sums and counts, sums over ``range(1, n + 1)``;
- strings: counting, removing or replacing classes of characters, and words.

`make_tasks` splits them into training problems (prompt + solution is the training text,
registered as the ``"code-tasks"`` corpus in `gptlib.data`) and a held-out evaluation set.
An evaluation problem never appears in the training text; its parts do (the predicate "less
than 7" and the aggregate "the largest" each appear in training problems, never together),
so a model that learned how docstring phrases map to code can solve it. Every evaluation
problem's hidden tests are checked to tell it apart from every other problem of its family.
"""

from __future__ import annotations

import functools
import random
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .codeeval import TestCase

__all__ = ["CodeTask", "make_tasks", "training_text"]

Args = tuple  # the positional arguments of one call


@dataclass(frozen=True)
class CodeTask:
    """One programming problem: a prompt to complete, a reference solution and hidden tests.

    Taught in the Codex chapter. ``prompt`` is the signature and docstring (HumanEval's format,
    Chen et al. 2021, §2.2); ``solution`` is the indented body that completes it; ``tests``
    call ``entry_point`` on inputs that are not the docstring's examples.
    """

    task_id: str  # "train/17" or "eval/3"
    family: str  # the grammar rule that made it, e.g. "filter_aggregate"
    entry_point: str  # the function's name
    prompt: str
    solution: str
    tests: tuple[TestCase, ...]

    @property
    def text(self) -> str:
        """The whole function: prompt followed by the reference solution."""
        return self.prompt + self.solution

    def test_code(self) -> str:
        """The hidden tests written as HumanEval writes them: ``def check(candidate)`` of asserts."""
        lines = [f"    assert {case.call('candidate')} == {case.expected!r}" for case in self.tests]
        return "def check(candidate):\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Spec:
    """A problem before its examples and tests are drawn."""

    family: str
    template: str  # problems of one template differ only in their slots (constants, words)
    name: str
    params: str
    returns: str
    doc: str
    body: str
    inputs: Callable[[random.Random], Args]


# ---------------------------------------------------------------------------- grammar
# (phrase, Python expression in x, name fragment)
PREDICATES = [
    ("even", "x % 2 == 0", "even"),
    ("odd", "x % 2 == 1", "odd"),
    ("positive", "x > 0", "positive"),
    ("negative", "x < 0", "negative"),
    *((f"greater than {k}", f"x > {k}", f"greater_than_{k}") for k in range(1, 10)),
    *((f"less than {k}", f"x < {k}", f"less_than_{k}") for k in range(1, 10)),
    *((f"divisible by {k}", f"x % {k} == 0", f"divisible_by_{k}") for k in range(3, 10)),
]
TRANSFORMS = [
    ("doubled", "2 * x", "doubled"),
    ("squared", "x * x", "squared"),
    ("negated", "-x", "negated"),
    ("made absolute", "abs(x)", "absolute"),
    *((f"increased by {k}", f"x + {k}", f"plus_{k}") for k in range(1, 10)),
    *((f"decreased by {k}", f"x - {k}", f"minus_{k}") for k in range(1, 10)),
    *((f"multiplied by {k}", f"x * {k}", f"times_{k}") for k in range(3, 10)),
    *((f"taken modulo {k}", f"x % {k}", f"mod_{k}") for k in range(2, 10)),
]
# (plural phrase, singular phrase, Python expression in c, name fragment)
CHAR_CLASSES = [
    ("vowels", "vowel", 'c in "aeiou"', "vowels"),
    ("digits", "digit", "c.isdigit()", "digits"),
    ("spaces", "space", 'c == " "', "spaces"),
    ("uppercase letters", "uppercase letter", "c.isupper()", "uppercase"),
    ("lowercase letters", "lowercase letter", "c.islower()", "lowercase"),
    *((f"letters {ch!r}", f"letter {ch!r}", f"c == {ch!r}", f"letter_{ch}") for ch in "bdfkmprtz"),
]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _numbers(rng: random.Random) -> Args:
    return ([rng.randint(-6, 16) for _ in range(rng.randint(1, 7))],)


def _integer(low: int, high: int) -> Callable[[random.Random], Args]:
    return lambda rng: (rng.randint(low, high),)


def _text(focus: str = "") -> Callable[[random.Random], Args]:
    """Random words of letters, a few capitals and digits; ``focus`` characters come often."""
    alphabet = _LETTERS + "aeiou" + "ABCDEKMPT" + "0123456789" + focus * 6

    def make(rng: random.Random) -> Args:
        words = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            for _ in range(rng.randint(1, 5))
        ]
        return (" ".join(words),)

    return make


def _list_specs() -> Iterator[_Spec]:
    sig = "numbers: list[int]"
    aggregates = [
        ("sum", "Return the sum of the numbers in numbers that are {p}.",
         "    return sum(x for x in numbers if {e})\n"),
        ("count", "Return how many numbers in numbers are {p}.",
         "    return sum(1 for x in numbers if {e})\n"),
        ("largest", "Return the largest number in numbers that is {p}, or 0 if there is none.",
         "    return max((x for x in numbers if {e}), default=0)\n"),
        ("smallest", "Return the smallest number in numbers that is {p}, or 0 if there is none.",
         "    return min((x for x in numbers if {e}), default=0)\n"),
        ("product", "Return the product of the numbers in numbers that are {p} (1 if none are).",
         "    product = 1\n    for x in numbers:\n        if {e}:\n            product *= x\n"
         "    return product\n"),
        ("first", "Return the first number in numbers that is {p}, or -1 if there is none.",
         "    for x in numbers:\n        if {e}:\n            return x\n    return -1\n"),
        ("index_of_first",
         "Return the position of the first number in numbers that is {p}, or -1 if there is none.",
         "    for i, x in enumerate(numbers):\n        if {e}:\n            return i\n"
         "    return -1\n"),
    ]  # fmt: skip
    for agg, doc, body in aggregates:
        for phrase, expr, frag in PREDICATES:
            family = "filter_aggregate" if agg not in ("first", "index_of_first") else "search"
            yield _Spec(family, f"{family}/{agg}", f"{agg}_{frag}", sig, "int",
                        doc.format(p=phrase), body.format(e=expr), _numbers)  # fmt: skip
    for phrase, expr, frag in PREDICATES:
        yield _Spec("filter_list", "filter_list", f"keep_{frag}", sig, "list[int]",
                    f"Return the numbers in numbers that are {phrase}, in their original order.",
                    f"    return [x for x in numbers if {expr}]\n", _numbers)  # fmt: skip
    for t_phrase, t_expr, t_frag in TRANSFORMS:
        yield _Spec("map_list", "map_list", f"each_{t_frag}", sig, "list[int]",
                    f"Return a list of the numbers in numbers, each {t_phrase}.",
                    f"    return [{t_expr} for x in numbers]\n", _numbers)  # fmt: skip
        for agg, word in (("sum", "sum"), ("max", "largest"), ("min", "smallest")):
            default = ", default=0" if agg != "sum" else ""
            inner = f"({t_expr} for x in numbers){default}" if default else (
                f"{t_expr} for x in numbers")  # fmt: skip
            yield _Spec("map_aggregate", f"map_aggregate/{agg}", f"{agg}_of_{t_frag}", sig,
                        "int", f"Return the {word} of the numbers in numbers, each {t_phrase} "
                        "first" + (", or 0 if numbers is empty." if default else "."),
                        f"    return {agg}({inner})\n", _numbers)  # fmt: skip
        for phrase, expr, frag in PREDICATES:
            yield _Spec("filter_map", "filter_map", f"{t_frag}_{frag}", sig, "list[int]",
                        f"Return the numbers in numbers that are {phrase}, each {t_phrase}.",
                        f"    return [{t_expr} for x in numbers if {expr}]\n", _numbers)  # fmt: skip


def _integer_specs() -> Iterator[_Spec]:
    steps = [(p, e.replace("x", "n"), f) for p, e, f in TRANSFORMS]
    for phrase, expr, frag in steps:
        yield _Spec("arithmetic", "arithmetic/1", frag if frag != "absolute" else "absolute_value",
                    "n: int", "int", f"Return n {phrase}.", f"    return {expr}\n",
                    _integer(-20, 40))  # fmt: skip
        for phrase2, expr2, frag2 in steps:
            if frag2 != frag:
                yield _Spec("arithmetic", "arithmetic/2", f"{frag}_then_{frag2}", "n: int", "int",
                            f"Return n {phrase}, then {phrase2}.",
                            f"    n = {expr}\n    return {expr2}\n", _integer(-20, 40))  # fmt: skip
    digits = "    digits = [int(d) for d in str(n)]\n"
    plain = [
        ("digit_sum", "Return the sum of the digits of n.", "    return sum(int(d) for d in str(n))\n"),
        ("digit_count", "Return the number of digits of n.", "    return len(str(n))\n"),
        ("largest_digit", "Return the largest digit of n.", "    return max(int(d) for d in str(n))\n"),
        ("smallest_digit", "Return the smallest digit of n.", "    return min(int(d) for d in str(n))\n"),
        ("reverse_digits", "Return n with its digits in reverse order.", "    return int(str(n)[::-1])\n"),
        ("digit_product", "Return the product of the digits of n.",
         "    product = 1\n    for d in str(n):\n        product *= int(d)\n    return product\n"),
    ]  # fmt: skip
    for name, doc, body in plain:
        yield _Spec("digits", "digits/plain", name, "n: int", "int", doc + " n is not negative.",
                    body, _integer(0, 99999))  # fmt: skip
    for phrase, expr, frag in PREDICATES:
        if frag in ("positive", "negative", "greater_than_9"):
            continue  # always true or always false for a digit
        for agg, doc, ret in (
            ("count", "Return how many digits of n are {p}.", "sum(1 for x in digits if {e})"),
            ("sum", "Return the sum of the digits of n that are {p}.", "sum(x for x in digits if {e})"),
        ):  # fmt: skip
            yield _Spec("digits", f"digits/{agg}", f"{agg}_digits_{frag}", "n: int", "int",
                        doc.format(p=phrase) + " n is not negative.",
                        digits + f"    return {ret.format(e=expr)}\n", _integer(0, 99999))  # fmt: skip
            yield _Spec("range_aggregate", f"range_aggregate/{agg}", f"{agg}_up_to_n_{frag}",
                        "n: int", "int",
                        (f"Return the sum of the integers from 1 to n that are {phrase}."
                         if agg == "sum" else f"Return how many integers from 1 to n are {phrase}."),
                        f"    return {ret.replace('digits', 'range(1, n + 1)').format(e=expr)}\n",
                        _integer(0, 30))  # fmt: skip


def _string_specs() -> Iterator[_Spec]:
    sig = "s: str"
    for plural, singular, expr, frag in CHAR_CLASSES:
        focus = frag[-1] if frag.startswith("letter_") else ""
        yield _Spec("string_count", "string_count", f"count_{frag}", sig, "int",
                    f"Return the number of {plural} in s.",
                    f"    return sum(1 for c in s if {expr})\n", _text(focus))  # fmt: skip
        ops = [("removed", '""', "remove"), ("in upper case", "c.upper()", "upper")]
        ops += [(f"replaced by {r!r}", repr(r), f"replace_{n}")
                for r, n in (("*", "star"), ("_", "underscore"), ("-", "dash"), ("#", "hash"))]  # fmt: skip
        for op_phrase, new, op_frag in ops:
            if op_frag == "upper" and frag in ("digits", "spaces", "uppercase"):
                continue  # upper-casing these changes nothing
            yield _Spec("string_map", "string_map", f"{op_frag}_{frag}", sig, "str",
                        f"Return s with every {singular} {op_phrase}.",
                        f'    return "".join({new} if {expr} else c for c in s)\n',
                        _text(focus))  # fmt: skip
    words = "    words = s.split()\n"
    for ch in "abcdeimnoprst":
        for where, method in (("start", "startswith"), ("end", "endswith")):
            yield _Spec("words", f"words/{where}", f"count_words_{where}ing_{ch}", sig, "int",
                        f"Return how many words of s {where} with {ch!r}.",
                        words + f"    return sum(1 for w in words if w.{method}({ch!r}))\n",
                        _text(ch))  # fmt: skip
    for k in range(1, 6):
        yield _Spec("words", "words/longer", f"count_words_longer_than_{k}", sig, "int",
                    f"Return how many words of s have more than {k} characters.",
                    words + f"    return sum(1 for w in words if len(w) > {k})\n", _text())  # fmt: skip
    for sep, sep_name in (
        ("-", "dashes"),
        ("_", "underscores"),
        (",", "commas"),
        ("+", "plus_signs"),
    ):
        yield _Spec("words", "words/join", f"join_words_with_{sep_name}", sig, "str",
                    f"Return the words of s joined by {sep!r}.", f"    return {sep!r}.join(s.split())\n",
                    _text())  # fmt: skip
    singles = [
        ("count_words", "int", "Return the number of words in s.", "    return len(s.split())\n"),
        ("reverse_words", "str", "Return the words of s in reverse order, joined by spaces.",
         '    return " ".join(reversed(s.split()))\n'),
        ("longest_word", "str", "Return the longest word of s (the first of equals), or '' if none.",
         '    return max(s.split(), key=len, default="")\n'),
        ("initials", "str", "Return the first characters of the words of s, joined together.",
         '    return "".join(w[0] for w in s.split())\n'),
    ]  # fmt: skip
    for name, returns, doc, body in singles:
        yield _Spec("words", "words/single", name, sig, returns, doc, body, _text())


# How many problems of each large template to keep (the rest of the grammar is used whole).
_SUBSAMPLE = {"filter_map": 260, "arithmetic/2": 300, "string_map": 110}
EVAL_PER_FAMILY = 4


def _all_specs(rng: random.Random) -> list[_Spec]:
    specs = [*_list_specs(), *_integer_specs(), *_string_specs()]
    kept: list[_Spec] = []
    for template in dict.fromkeys(s.template for s in specs):
        group = [s for s in specs if s.template == template]
        size = _SUBSAMPLE.get(template, len(group))
        kept += rng.sample(group, size) if size < len(group) else group
    names = [s.name for s in kept]
    if len(set(names)) != len(names):  # a grammar bug, not a user error
        raise RuntimeError("two problems of the grammar share a function name")
    return kept


def _call(function: Callable, args: Args) -> object:
    """The reference solution's result, on a copy of the arguments (a solution may mutate them)."""
    return function(*(list(a) if isinstance(a, list) else a for a in args))


def _compile(spec: _Spec) -> Callable:
    """The reference solution of a spec as a function (our own grammar's code, not a model's)."""
    namespace: dict = {}
    exec(f"def {spec.name}({spec.params}) -> {spec.returns}:\n{spec.body}", namespace)  # noqa: S102
    return namespace[spec.name]


_PROBES = 40  # random inputs per signature on which problems are compared


def _build(
    spec: _Spec, task_id: str, rng: random.Random, reference: Callable, probe: list[Args],
    outputs: dict[str, tuple], neighbours: list[str],
) -> CodeTask:  # fmt: skip
    """Draw examples and hidden tests for a spec; the tests reject every neighbour.

    ``outputs`` holds each problem's results on the ``probe`` inputs; a neighbour is another
    problem of the family with the same signature. Hidden tests are five fresh random inputs,
    then probe inputs chosen greedily until every neighbour gets some test wrong.
    """
    header = f"def {spec.name}({spec.params}) -> {spec.returns}:\n"
    seen: set[str] = set()

    def fresh(args: Args) -> bool:
        if repr(args) in seen:
            return False
        seen.add(repr(args))
        return True

    def draw() -> Args:
        while not fresh(args := spec.inputs(rng)):
            pass
        return args

    examples = [draw() for _ in range(2)]
    tests = [draw() for _ in range(5)]
    mine = outputs[spec.name]
    results = {repr(a): repr(_call(reference, a)) for a in tests}
    left = [n for n in neighbours
            if all(repr(_call(_FUNCTIONS[n], a)) == results[repr(a)] for a in tests)]  # fmt: skip
    while left:
        best = max(range(len(probe)), key=lambda j: sum(outputs[n][j] != mine[j] for n in left))
        if not fresh(probe[best]) or all(outputs[n][best] == mine[best] for n in left):
            raise RuntimeError(f"the probe inputs cannot tell {spec.name} from {left[0]}")
        tests.append(probe[best])
        left = [n for n in left if outputs[n][best] == mine[best]]
    doc = textwrap.fill(spec.doc, width=92, initial_indent='    """', subsequent_indent="    ")
    lines = [doc]
    for args in examples:
        lines += [
            f"    >>> {spec.name}({', '.join(map(repr, args))})",
            f"    {_call(reference, args)!r}",
        ]
    prompt = header + "\n".join(lines) + '\n    """\n'
    cases = tuple(TestCase(args, _call(reference, args)) for args in tests)
    return CodeTask(task_id, spec.family, spec.name, prompt, spec.body, cases)


_FUNCTIONS: dict[str, Callable] = {}  # reference solutions by name, compiled once


@functools.cache
def make_tasks(seed: int = 0) -> tuple[tuple[CodeTask, ...], tuple[CodeTask, ...]]:
    """Generate the problems for a seed: (training problems, held-out evaluation problems).

    Taught in the Codex chapter. The same seed gives the same problems on every machine
    (``random.Random`` with an integer seed). The evaluation set holds `EVAL_PER_FAMILY`
    problems of each family, drawn from templates with at least six members, so each one's
    parts (predicate, transform, aggregate, constant) appear in training problems; its own
    function never does. Two problems may compute the same function (for integers, "less than
    1" is "negative"); an evaluation problem is drawn only among those that differ from every
    other problem of their family on random inputs, and its hidden tests are chosen so that
    every other problem of the family fails at least one of them.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = random.Random(seed)
    specs = _all_specs(rng)
    for spec in specs:
        if spec.name not in _FUNCTIONS:
            _FUNCTIONS[spec.name] = _compile(spec)
    groups: dict[tuple, list[_Spec]] = {}
    for spec in specs:
        groups.setdefault((spec.family, spec.params, spec.returns), []).append(spec)
    probes, outputs = {}, {}
    for key, group in groups.items():
        probes[key] = [group[0].inputs(rng) for _ in range(_PROBES)]
        for spec in group:
            outputs[spec.name] = tuple(repr(_call(_FUNCTIONS[spec.name], a)) for a in probes[key])
    sizes = Counter(spec.template for spec in specs)
    counts = Counter(outputs[spec.name] for spec in specs)
    held_out: list[_Spec] = []
    for family in dict.fromkeys(spec.family for spec in specs):
        candidates = [s for s in specs if s.family == family and sizes[s.template] >= 6
                      and counts[outputs[s.name]] == 1]  # fmt: skip
        held_out += rng.sample(candidates, EVAL_PER_FAMILY)
    chosen = {spec.name for spec in held_out}
    training = [spec for spec in specs if spec.name not in chosen]
    rng.shuffle(training)

    def build(spec: _Spec, task_id: str, held: bool) -> CodeTask:
        key = (spec.family, spec.params, spec.returns)
        neighbours = [o.name for o in groups[key] if o is not spec] if held else []
        return _build(spec, task_id, rng, _FUNCTIONS[spec.name], probes[key], outputs, neighbours)

    train_tasks = tuple(build(s, f"train/{i}", False) for i, s in enumerate(training))
    eval_tasks = tuple(build(s, f"eval/{i}", True) for i, s in enumerate(held_out))
    return train_tasks, eval_tasks


def training_text(seed: int = 0) -> str:
    """The training problems as one text: each whole function, two blank lines between them.

    Taught in the Codex chapter; `gptlib.data.load_corpus("code-tasks")` returns it. Only
    training problems are in it, in a shuffled order, so the last tenth that
    `gptlib.data.split` keeps for validation mixes every family.
    """
    train, _ = make_tasks(seed)
    return "\n\n".join(task.text for task in train)
