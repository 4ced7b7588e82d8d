"""The hidden labeler of the toy instruction world: readable criteria, a score, rankings.

Taught in notebooks/12_instructgpt.ipynb.

It plays InstructGPT's human labelers, who ranked K = 4 to 9 responses to each prompt
(Ouyang et al. 2022, §3.4). Only its rankings may reach the reward model and DPO; the policy
never sees its scores. Each criterion is worth between 0 and 1 and the score is their mean:

``mentions``    the requested name and animal or thing appear;
``length``      the number of sentences is in the requested range (a story 3-5, a short story
                1-2, a list one sentence);
``count``       counting stories count to the requested number, lists name that many animals;
``fluent``      every pair of neighbouring words (and punctuation marks) is one the story grammar
                can produce, so garbled words and "Pia Pia" lose points;
``no_repeats``  no sentence is said twice;
``finished``    the response ends a sentence.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from itertools import pairwise

from .data import (
    _ANIMALS,
    _COLOURS,
    _FOODS,
    _GLAD,
    _NAMES,
    _NUMBERS,
    _PLACES,
    _THINGS,
    make_stories,
)
from .instructions import _SENTENCE_END, Instruction, _sentences, demonstration, make_instructions

__all__ = ["Labeler"]

_TOKEN = re.compile(r"[A-Za-z]+|[^\sA-Za-z]")
_CATEGORY = {
    **{n.lower(): "<name>" for n in _NAMES},
    **{a: "<animal>" for a in _ANIMALS},
    **{p: "<animals>" for p in _ANIMALS.values()},
    **{c: "<colour>" for c in _COLOURS},
    **{t: "<thing>" for t in _THINGS},
    **{w: "<food>" for food in _FOODS for w in food.split()},
    **{g: "<glad>" for g in _GLAD},
    **{p.split()[-1]: "<place>" for p in _PLACES},
    **{n: "<number>" for n in _NUMBERS},
}


def _words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, in order."""
    return [token.lower() for token in _TOKEN.findall(text)]


def _pattern(words: Sequence[str]) -> list[str]:
    return [_CATEGORY.get(word, word) for word in words]


@functools.cache
def _grammar_bigrams() -> frozenset[tuple[str, str]]:
    """Every neighbouring pair of word categories that the stories or demonstrations contain."""
    texts = make_stories(4000, seed=1).split("\n\n")
    rng = random.Random(1)
    texts += [demonstration(i, rng) for i in make_instructions(4000, seed=1)]
    pairs: set[tuple[str, str]] = set()
    for text in texts:
        pattern = _pattern(_words(text))
        pairs.update(pairwise(pattern))
    return frozenset(pairs)


class Labeler:
    """The hidden judge: scores a response by readable criteria and ranks several responses.

    Taught in notebooks/12_instructgpt.ipynb. It stands in for InstructGPT's human labelers, who
    ranked K = 4 to 9 responses to a prompt (Ouyang et al. 2022, §3.4); the reward model and
    DPO learn from its rankings only. `criteria` shows the breakdown, `score` the mean.
    """

    def criteria(self, instruction: Instruction, response: str) -> dict[str, float]:
        """Each criterion of the module docstring that applies to this instruction, in [0, 1]."""
        if not isinstance(response, str):
            raise TypeError(f"response must be a decoded string, got {type(response).__name__}")
        words = _words(response)
        sentences = _sentences(response)
        low, high = instruction.sentences
        result: dict[str, float] = {}
        if instruction.required:
            present = [w.lower() in words for w in instruction.required]
            result["mentions"] = sum(present) / len(present)
        n = len(sentences)
        result["length"] = 1.0 if low <= n <= high else 1.0 / (1 + min(abs(n - low), abs(n - high)))
        if instruction.number is not None:
            result["count"] = float(self._counted(instruction, words) == instruction.number)
        pattern = _pattern(words)
        pairs = list(pairwise(pattern))
        known = _grammar_bigrams()
        result["fluent"] = sum(p in known for p in pairs) / len(pairs) if pairs else 0.0
        lowered = [s.lower() for s in sentences]
        result["no_repeats"] = len(set(lowered)) / len(lowered) if lowered else 0.0
        result["finished"] = float(
            bool(sentences) and _SENTENCE_END.search(sentences[-1]) is not None
        )
        return result

    @staticmethod
    def _counted(instruction: Instruction, words: list[str]) -> int:
        """How far a counting story counts (its largest number word), or how many animals a list
        names (0 if it names one twice)."""
        if instruction.kind == "list":
            animals = [w for w in words if w in _ANIMALS]
            return len(animals) if len(set(animals)) == len(animals) else 0
        numbers = [_NUMBERS.index(w) + 1 for w in words if w in _NUMBERS]
        return max(numbers, default=0)

    def score(self, instruction: Instruction, response: str) -> float:
        """The mean of the criteria: 1.0 for a perfect response, lower for each flaw."""
        values = self.criteria(instruction, response)
        return sum(values.values()) / len(values)

    def rank(self, instruction: Instruction, responses: Sequence[str]) -> list[int]:
        """Indices of the responses from best to worst (equal scores keep their given order)."""
        scores = [self.score(instruction, r) for r in responses]
        return sorted(range(len(responses)), key=lambda i: -scores[i])

    def preference_pairs(
        self, instruction: Instruction, responses: Sequence[str]
    ) -> list[tuple[int, int]]:
        """Every (chosen, rejected) pair of the C(K, 2) pairs whose scores differ.

        Taught in notebooks/12_instructgpt.ipynb. InstructGPT trains on all C(K, 2) comparisons of a
        ranking of K responses (Ouyang et al. 2022, §3.5); pairs the labeler scores equal say
        nothing about preference and are left out.
        """
        scores = [self.score(instruction, r) for r in responses]
        return [
            (i, j) if scores[i] > scores[j] else (j, i)
            for i in range(len(responses))
            for j in range(i + 1, len(responses))
            if scores[i] != scores[j]
        ]
