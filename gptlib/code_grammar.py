"""The grammar behind gptlib.code_tasks: small Python functions built from phrase-code parts.

Taught in notebooks/11_codex.ipynb. Each part pairs an English phrase with a piece of
Python: the predicate "greater than 4" with ``x > 4``, the transform "squared" with ``x * x``,
the aggregate "the largest ... or 0 if there is none" with ``max(..., default=0)``. A rule
(a *template*) combines parts into a problem spec: a function name, a signature, a one-sentence
docstring, a reference body and a generator of random arguments. Every word list and rule
here was written for this book.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["CHAR_CLASSES", "HELD_OUT_FAMILIES", "PREDICATES", "TRANSFORMS", "all_specs"]

Args = tuple  # the positional arguments of one call


@dataclass(frozen=True)
class Spec:
    """A problem before its examples and tests are drawn (see gptlib.code_tasks)."""

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


def _list_specs() -> Iterator[Spec]:
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
            yield Spec(family, f"{family}/{agg}", f"{agg}_{frag}", sig, "int",
                        doc.format(p=phrase), body.format(e=expr), _numbers)  # fmt: skip
    for phrase, expr, frag in PREDICATES:
        yield Spec("filter_list", "filter_list", f"keep_{frag}", sig, "list[int]",
                    f"Return the numbers in numbers that are {phrase}, in their original order.",
                    f"    return [x for x in numbers if {expr}]\n", _numbers)  # fmt: skip
    for t_phrase, t_expr, t_frag in TRANSFORMS:
        yield Spec("map_list", "map_list", f"each_{t_frag}", sig, "list[int]",
                    f"Return a list of the numbers in numbers, each {t_phrase}.",
                    f"    return [{t_expr} for x in numbers]\n", _numbers)  # fmt: skip
        for agg, word in (("sum", "sum"), ("max", "largest"), ("min", "smallest")):
            default = ", default=0" if agg != "sum" else ""
            inner = f"({t_expr} for x in numbers){default}" if default else (
                f"{t_expr} for x in numbers")  # fmt: skip
            yield Spec("map_aggregate", f"map_aggregate/{agg}", f"{agg}_of_{t_frag}", sig,
                        "int", f"Return the {word} of the numbers in numbers, each {t_phrase} "
                        "first" + (", or 0 if numbers is empty." if default else "."),
                        f"    return {agg}({inner})\n", _numbers)  # fmt: skip
        for phrase, expr, frag in PREDICATES:
            yield Spec("filter_map", "filter_map", f"{t_frag}_{frag}", sig, "list[int]",
                        f"Return the numbers in numbers that are {phrase}, each {t_phrase}.",
                        f"    return [{t_expr} for x in numbers if {expr}]\n", _numbers)  # fmt: skip


def _chain_specs() -> Iterator[Spec]:
    """Problems that chain three parts where training problems chain two (held out only)."""
    steps = [(p, e.replace("x", "n"), f) for p, e, f in TRANSFORMS]
    for p1, e1, f1 in steps:
        for p2, e2, f2 in steps:
            for p3, e3, f3 in steps:
                if f1 != f2 != f3:
                    yield Spec("chain_arithmetic", "chain_arithmetic", f"{f1}_then_{f2}_then_{f3}",
                                "n: int", "int", f"Return n {p1}, then {p2}, then {p3}.",
                                f"    n = {e1}\n    n = {e2}\n    return {e3}\n",
                                _integer(-20, 40))  # fmt: skip
    for t_phrase, t_expr, t_frag in TRANSFORMS:
        for phrase, expr, frag in PREDICATES:
            for agg, word in (("sum", "sum"), ("max", "largest"), ("min", "smallest")):
                inner = f"{t_expr} for x in numbers if {expr}"
                tail = "."
                if agg != "sum":
                    inner, tail = f"({inner}), default=0", ", or 0 if there is none."
                yield Spec("filter_map_aggregate", "filter_map_aggregate",
                            f"{agg}_of_{t_frag}_{frag}", "numbers: list[int]", "int",
                            f"Return the {word} of the numbers in numbers that are {phrase}, "
                            f"each {t_phrase} first{tail}", f"    return {agg}({inner})\n",
                            _numbers)  # fmt: skip


def _integer_specs() -> Iterator[Spec]:
    steps = [(p, e.replace("x", "n"), f) for p, e, f in TRANSFORMS]
    for phrase, expr, frag in steps:
        yield Spec("arithmetic", "arithmetic/1", frag if frag != "absolute" else "absolute_value",
                    "n: int", "int", f"Return n {phrase}.", f"    return {expr}\n",
                    _integer(-20, 40))  # fmt: skip
        for phrase2, expr2, frag2 in steps:
            if frag2 != frag:
                yield Spec("arithmetic", "arithmetic/2", f"{frag}_then_{frag2}", "n: int", "int",
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
        yield Spec("digits", "digits/plain", name, "n: int", "int", doc + " n is not negative.",
                    body, _integer(0, 99999))  # fmt: skip
    for phrase, expr, frag in PREDICATES:
        if frag in ("positive", "negative", "greater_than_9"):
            continue  # always true or always false for a digit
        for agg, doc, ret in (
            ("count", "Return how many digits of n are {p}.", "sum(1 for x in digits if {e})"),
            ("sum", "Return the sum of the digits of n that are {p}.", "sum(x for x in digits if {e})"),
        ):  # fmt: skip
            yield Spec("digits", f"digits/{agg}", f"{agg}_digits_{frag}", "n: int", "int",
                        doc.format(p=phrase) + " n is not negative.",
                        digits + f"    return {ret.format(e=expr)}\n", _integer(0, 99999))  # fmt: skip
            yield Spec("range_aggregate", f"range_aggregate/{agg}", f"{agg}_up_to_n_{frag}",
                        "n: int", "int",
                        (f"Return the sum of the integers from 1 to n that are {phrase}."
                         if agg == "sum" else f"Return how many integers from 1 to n are {phrase}."),
                        f"    return {ret.replace('digits', 'range(1, n + 1)').format(e=expr)}\n",
                        _integer(0, 30))  # fmt: skip


def _string_specs() -> Iterator[Spec]:
    sig = "s: str"
    for plural, singular, expr, frag in CHAR_CLASSES:
        focus = frag[-1] if frag.startswith("letter_") else ""
        yield Spec("string_count", "string_count", f"count_{frag}", sig, "int",
                    f"Return the number of {plural} in s.",
                    f"    return sum(1 for c in s if {expr})\n", _text(focus))  # fmt: skip
        ops = [("removed", '""', "remove"), ("in upper case", "c.upper()", "upper")]
        ops += [(f"replaced by {r!r}", repr(r), f"replace_{n}")
                for r, n in (("*", "star"), ("_", "underscore"), ("-", "dash"), ("#", "hash"))]  # fmt: skip
        for op_phrase, new, op_frag in ops:
            if op_frag == "upper" and frag in ("digits", "spaces", "uppercase"):
                continue  # upper-casing these changes nothing
            yield Spec("string_map", "string_map", f"{op_frag}_{frag}", sig, "str",
                        f"Return s with every {singular} {op_phrase}.",
                        f'    return "".join({new} if {expr} else c for c in s)\n',
                        _text(focus))  # fmt: skip
    words = "    words = s.split()\n"
    for ch in "abcdeimnoprst":
        for where, method in (("start", "startswith"), ("end", "endswith")):
            yield Spec("words", f"words/{where}", f"count_words_{where}ing_{ch}", sig, "int",
                        f"Return how many words of s {where} with {ch!r}.",
                        words + f"    return sum(1 for w in words if w.{method}({ch!r}))\n",
                        _text(ch))  # fmt: skip
    for k in range(1, 6):
        yield Spec("words", "words/longer", f"count_words_longer_than_{k}", sig, "int",
                    f"Return how many words of s have more than {k} characters.",
                    words + f"    return sum(1 for w in words if len(w) > {k})\n", _text())  # fmt: skip
    for sep, sep_name in (
        ("-", "dashes"),
        ("_", "underscores"),
        (",", "commas"),
        ("+", "plus_signs"),
    ):
        yield Spec("words", "words/join", f"join_words_with_{sep_name}", sig, "str",
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
        yield Spec("words", "words/single", name, sig, returns, doc, body, _text())


# How many problems of each large template to keep (the rest of the grammar is used whole).
_SUBSAMPLE = {"filter_map": 260, "arithmetic/2": 300, "string_map": 110,
              "chain_arithmetic": 150, "filter_map_aggregate": 150}  # fmt: skip
# Families never trained on: each problem chains three parts where training chains two, like
# the "long chains of operations" Chen et al. 2021 (§6) found hard for Codex.
HELD_OUT_FAMILIES = {"chain_arithmetic": 6, "filter_map_aggregate": 6}


def all_specs(rng: random.Random) -> list[Spec]:
    """Every problem spec of the grammar; the largest templates subsampled with ``rng``."""
    specs = [*_list_specs(), *_integer_specs(), *_string_specs(), *_chain_specs()]
    kept: list[Spec] = []
    for template in dict.fromkeys(s.template for s in specs):
        group = [s for s in specs if s.template == template]
        size = _SUBSAMPLE.get(template, len(group))
        kept += rng.sample(group, size) if size < len(group) else group
    names = [s.name for s in kept]
    if len(set(names)) != len(names):  # a grammar bug, not a user error
        raise RuntimeError("two problems of the grammar share a function name")
    return kept
