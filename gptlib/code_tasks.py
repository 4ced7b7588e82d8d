"""A seeded family of small Python programming problems in HumanEval's format, for a code model.

Taught in notebooks/11_codex.ipynb.

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
from collections.abc import Callable
from dataclasses import dataclass

from .code_grammar import HELD_OUT_FAMILIES, Args, Spec, all_specs
from .codeeval import TestCase

__all__ = ["EVAL_PER_FAMILY", "CodeTask", "make_tasks", "training_text"]

EVAL_PER_FAMILY = 3


@dataclass(frozen=True)
class CodeTask:
    """One programming problem: a prompt to complete, a reference solution and hidden tests.

    Taught in notebooks/11_codex.ipynb. ``prompt`` is the signature and docstring
    (HumanEval's format, Chen et al. 2021, §2.2); ``solution`` is the indented body that
    completes it; ``tests`` call ``entry_point`` on inputs that are not the docstring's
    examples.
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


def _call(function: Callable, args: Args) -> object:
    """The reference solution's result, on a copy of the arguments (a solution may mutate them)."""
    return function(*(list(a) if isinstance(a, list) else a for a in args))


def _compile(spec: Spec) -> Callable:
    """The reference solution of a spec as a function (our own grammar's code, not a model's)."""
    namespace: dict = {}
    exec(f"def {spec.name}({spec.params}) -> {spec.returns}:\n{spec.body}", namespace)  # noqa: S102
    return namespace[spec.name]


_PROBES = 40  # random inputs per signature on which problems are compared


def _build(
    spec: Spec, task_id: str, rng: random.Random, reference: Callable, probe: list[Args],
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
        unused = [j for j in range(len(probe)) if repr(probe[j]) not in seen]
        best = max(unused, key=lambda j: sum(outputs[n][j] != mine[j] for n in left), default=0)
        if not unused or all(outputs[n][best] == mine[best] for n in left):
            raise RuntimeError(f"the probe inputs cannot tell {spec.name} from {left[0]}")
        fresh(probe[best])
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

    Taught in notebooks/11_codex.ipynb. The same seed gives the same problems on every machine
    (``random.Random`` with an integer seed). The evaluation set holds `EVAL_PER_FAMILY`
    problems of each trained family, drawn from templates with at least six members, so each
    one's parts (predicate, transform, aggregate, constant) appear in training problems; its
    own function never does. It also holds the problems of `HELD_OUT_FAMILIES`, which chain
    three parts (three arithmetic steps; filter, transform and aggregate) where every training
    problem chains at most two. Two problems may compute the same function (for integers, "less
    than 1" is "negative"); an evaluation problem is drawn only among those that differ from
    every other problem of their family on random inputs (and are not constant there), and
    its hidden tests are chosen so that every other problem of the family fails at
    least one of them.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    rng = random.Random(seed)
    specs = all_specs(rng)
    for spec in specs:
        if spec.name not in _FUNCTIONS:
            _FUNCTIONS[spec.name] = _compile(spec)
    groups: dict[tuple, list[Spec]] = {}
    for spec in specs:
        groups.setdefault((spec.family, spec.params, spec.returns), []).append(spec)
    probes, outputs = {}, {}
    for key, group in groups.items():
        probes[key] = [group[0].inputs(rng) for _ in range(_PROBES)]
        for spec in group:
            outputs[spec.name] = tuple(repr(_call(_FUNCTIONS[spec.name], a)) for a in probes[key])
    sizes = Counter(spec.template for spec in specs)
    counts = Counter(outputs[spec.name] for spec in specs)
    held_out: list[Spec] = []
    for family in dict.fromkeys(spec.family for spec in specs):
        candidates = [s for s in specs if s.family == family and sizes[s.template] >= 6
                      and counts[outputs[s.name]] == 1 and len(set(outputs[s.name])) > 1]  # fmt: skip
        held_out += rng.sample(candidates, HELD_OUT_FAMILIES.get(family, EVAL_PER_FAMILY))
    chosen = {spec.name for spec in held_out}
    training = [s for s in specs if s.name not in chosen and s.family not in HELD_OUT_FAMILIES]
    rng.shuffle(training)

    def build(spec: Spec, task_id: str, held: bool) -> CodeTask:
        key = (spec.family, spec.params, spec.returns)
        neighbours = [o.name for o in groups[key] if o is not spec] if held else []
        return _build(spec, task_id, rng, _FUNCTIONS[spec.name], probes[key], outputs, neighbours)

    train_tasks = tuple(build(s, f"train/{i}", False) for i, s in enumerate(training))
    eval_tasks = tuple(build(s, f"eval/{i}", True) for i, s in enumerate(held_out))
    return train_tasks, eval_tasks


def training_text(seed: int = 0) -> str:
    """The training problems as one text: each whole function, two blank lines between them.

    Taught in notebooks/11_codex.ipynb; `gptlib.data.load_corpus("code-tasks")` returns it. Only
    training problems are in it, in a shuffled order, so the last tenth that
    `gptlib.data.split` keeps for validation mixes every family.
    """
    train, _ = make_tasks(seed)
    return "\n\n".join(task.text for task in train)
