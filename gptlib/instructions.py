"""A toy instruction-following world: instructions, ideal responses, and a labeler that ranks.

Taught in the InstructGPT chapter.

InstructGPT (Ouyang et al. 2022, §3.2-3.4) needs three things from people: prompts, written
demonstrations of the ideal response, and rankings of several model responses to one prompt.
This module makes all three without people, in the world of the ``"stories"`` corpus
(`gptlib.data.make_stories`), so a model pre-trained on that corpus already knows the words:

- `make_instructions` draws instructions from a seeded grammar ("Write a short story about a cat
  named Pia.", "List three animals.", ...);
- `demonstration` writes an ideal response to one, like a labeler's demonstration;
- `Labeler` plays the human: it scores a response by criteria a reader can check by eye and ranks
  K responses to the same prompt. Only its rankings may reach the reward model and DPO; the
  policy never sees its scores.

The labeler's criteria, each worth between 0 and 1 (the score is their mean):

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
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .data import (
    _ANIMALS,
    _COLOURS,
    _FOODS,
    _GLAD,
    _HIDING,
    _NAMES,
    _NUMBERS,
    _PLACES,
    _THINGS,
    _counting,
    make_stories,
)
from .data import _a as _with_article

__all__ = [
    "FLAWS",
    "KINDS",
    "PROMPT_TOKENS",
    "Instruction",
    "Labeler",
    "demonstration",
    "demonstrations",
    "encode_prompt",
    "make_instructions",
]

KINDS = ("pet", "lost", "count", "list")
FLAWS = ("unfinished", "repeats", "runs_on")
_STORY_SENTENCES = (3, 5)
_SHORT_SENTENCES = (1, 2)
PROMPT_TOKENS = 28  # every prompt is left-padded with newlines to this many tokens


@dataclass(frozen=True)
class Instruction:
    """One instruction and what a good response must contain; `text` is what the model sees."""

    kind: str  # one of KINDS
    text: str  # e.g. "Write a short story about a cat named Pia."
    required: tuple[str, ...]  # words that must appear (names, an animal or a thing)
    sentences: tuple[int, int]  # allowed number of sentences, inclusive
    number: int | None = None  # how far a counting story counts, how many animals a list names


def _instruction(kind: str, rng: random.Random) -> Instruction:
    """Draw one instruction of the given kind."""
    name = rng.choice(_NAMES)
    short = rng.random() < 0.5
    size = "a short story" if short else "a story"
    sentences = _SHORT_SENTENCES if short else _STORY_SENTENCES
    if kind == "pet":
        animal = rng.choice(list(_ANIMALS))
        text = f"Write {size} about {_with_article(animal)} named {name}."
        return Instruction(kind, text, (name, animal), sentences)
    if kind == "lost":
        thing = rng.choice(_THINGS)
        text = f"Write {size} about {name} finding a lost {thing}."
        return Instruction(kind, text, (name, thing), sentences)
    number = rng.randint(2, len(_NUMBERS))
    if kind == "count":
        plural = _ANIMALS[rng.choice(list(_ANIMALS))]
        text = f"Write a short story in which {name} counts {_NUMBERS[number - 1]} {plural}."
        return Instruction(kind, text, (name, plural), _SHORT_SENTENCES, number)
    if kind == "list":
        return Instruction(kind, f"List {_NUMBERS[number - 1]} animals.", (), (1, 1), number)
    raise ValueError(f"unknown instruction kind {kind!r}; use one of {KINDS}")


def make_instructions(n: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[Instruction]:
    """Draw n instructions from the seeded grammar, the kinds in equal shares on average.

    Taught in the InstructGPT chapter. The same (n, seed, kinds) always gives the same list;
    use different seeds for the SFT, reward-model, RL and evaluation prompts, as InstructGPT
    kept separate prompt sets for each stage (Ouyang et al. 2022, §3.2, Table 6).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {list(kinds)}")
    rng = random.Random(seed)
    return [_instruction(rng.choice(list(kinds)), rng) for _ in range(n)]


def demonstration(
    instruction: Instruction, rng: random.Random | int = 0, flaw: str | None = None
) -> str:
    """A response to the instruction in the words of the stories corpus: ideal, or with a flaw.

    Taught in the InstructGPT chapter. The details the instruction leaves open (the owner, the
    food, the place) are drawn with `rng` (a `random.Random` or a seed). Without a flaw the
    labeler gives it the full score of 1.0. A flaw from FLAWS costs points the way a hurried
    writer would lose them: "unfinished" stops before the last two words, "repeats" says the
    last sentence twice, "runs_on" carries on with a counting story nobody asked for.
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    if flaw is not None and flaw not in FLAWS:
        raise ValueError(f"unknown flaw {flaw!r}; use None or one of {FLAWS}")
    text = _ideal(instruction, rng)
    if flaw == "unfinished":
        return text.rsplit(" ", 2)[0]
    if flaw == "repeats":
        return f"{text} {_sentences(text)[-1]}"
    if flaw == "runs_on":
        return f"{text} {_counting(rng)}"
    return text


def demonstrations(
    instructions: Sequence[Instruction], seed: int = 0, flaw_rate: float = 0.0
) -> list[str]:
    """One demonstration per instruction; a share `flaw_rate` of them has one flaw from FLAWS.

    Taught in the InstructGPT chapter. Human demonstrations are not all perfect, and SFT
    imitates whatever they do; ranking responses is easier than writing perfect ones, which is
    why InstructGPT's reward model and RL can improve on the SFT model (Ouyang et al. 2022, §4.1).
    """
    if not 0.0 <= flaw_rate <= 1.0:
        raise ValueError(f"flaw_rate must be in [0, 1], got {flaw_rate}")
    rng = random.Random(seed)
    return [
        demonstration(i, rng, rng.choice(FLAWS) if rng.random() < flaw_rate else None)
        for i in instructions
    ]


def _ideal(instruction: Instruction, rng: random.Random) -> str:
    """The flawless demonstration."""
    short = instruction.sentences == _SHORT_SENTENCES
    glad, place = rng.choice(_GLAD), rng.choice(_PLACES)
    if instruction.kind == "pet":
        name, animal = instruction.required
        owner = rng.choice([n for n in _NAMES if n != name])
        food = rng.choice(_FOODS)
        first = f"{owner} had {_with_article(animal)} called {name}."
        if short:
            return f"{first} {name} the {animal} ate {food} and was {glad}."
        return (
            f"{first} Every morning {name} the {animal} ate {food}. One morning there was no "
            f"{food}, so {owner} went to {place} to buy {food}. {name} the {animal} ate the "
            f"{food} and was {glad} again."
        )
    if instruction.kind == "lost":
        hero, thing = instruction.required
        friend = rng.choice([n for n in _NAMES if n != hero])
        thing = f"{rng.choice(_COLOURS)} {thing}"
        hiding = rng.choice(_HIDING)
        if short:
            return f"{friend} lost {_with_article(thing)}, and {hero} found it {hiding}."
        return (
            f"{hero} lived near {place}. One day {friend} lost {_with_article(thing)}. "
            f"{hero} and {friend} looked for the {thing} everywhere. At last {hero} found the "
            f'{thing} {hiding}. {friend} said, "Thank you, {hero}!"'
        )
    if instruction.kind == "count":
        name, plural = instruction.required
        animal = next(a for a, p in _ANIMALS.items() if p == plural)
        counted = ", ".join(f"{w} {plural}" for w in _NUMBERS[1 : instruction.number])
        return (
            f"{name} went to {place} and counted: one {animal}, {counted}. "
            f'"I saw {_NUMBERS[instruction.number - 1]} {plural}," said {name}.'
        )
    if instruction.kind == "list":
        animals = [_with_article(a) for a in rng.sample(list(_ANIMALS), instruction.number)]
        listed = ", ".join(animals[:-1]) + " and " + animals[-1]
        return listed[0].upper() + listed[1:] + "."
    raise ValueError(f"unknown instruction kind {instruction.kind!r}; use one of {KINDS}")


def encode_prompt(
    tokenizer: Any, instruction: Instruction, length: int = PROMPT_TOKENS
) -> list[int]:
    """The token ids a model sees for an instruction: newlines, the text, a newline; `length` ids.

    Taught in the InstructGPT chapter. `GPT` has no padding mask, so prompts of different
    lengths cannot share a batch; padding each on the left with newline tokens (blank lines,
    which the stories corpus has between stories) makes every prompt `length` tokens long, so
    a batch of prompts is one rectangle and the response always starts at position `length`.
    """
    ids = tokenizer.encode(instruction.text + "\n")
    newline = tokenizer.encode("\n")
    if len(newline) != 1:
        raise ValueError("the tokenizer must encode a newline as one token to pad prompts with")
    if len(ids) > length:
        raise ValueError(
            f"the prompt {instruction.text!r} is {len(ids)} tokens, more than length={length}; "
            "pass a larger length"
        )
    return newline * (length - len(ids)) + ids


# ----------------------------------------------------------------------------- the labeler
_TOKEN = re.compile(r"[A-Za-z]+|[^\sA-Za-z]")
_SENTENCE_END = re.compile(r'[.!?]"?(?=\s|$)')
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


def _sentences(text: str) -> list[str]:
    """The text cut after each sentence-ending mark (a closing quote stays with its sentence)."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()].strip())
        start = match.end()
    rest = text[start:].strip()
    return [p for p in pieces + ([rest] if rest else []) if p]


def _pattern(words: Sequence[str]) -> list[str]:
    return [_CATEGORY.get(word, word) for word in words]


@functools.cache
def _grammar_bigrams() -> frozenset[tuple[str, str]]:
    """Every neighbouring pair of word categories that the stories or demonstrations contain."""
    texts = make_stories(4000, seed=1).split("\n\n")
    rng = random.Random(1)
    texts += [_ideal(i, rng) for i in make_instructions(4000, seed=1)]
    pairs: set[tuple[str, str]] = set()
    for text in texts:
        pattern = _pattern(_words(text))
        pairs.update(pairwise(pattern))
    return frozenset(pairs)


class Labeler:
    """The hidden judge: scores a response by readable criteria and ranks several responses.

    Taught in the InstructGPT chapter. It stands in for InstructGPT's human labelers, who
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

        Taught in the InstructGPT chapter. InstructGPT trains on all C(K, 2) comparisons of a
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
