"""A toy instruction-following world: instructions, demonstrations, prompts and responses.

Taught in notebooks/12_instructgpt.ipynb.

InstructGPT (Ouyang et al. 2022, §3.2-3.4) needs three things from people: prompts, written
demonstrations of the ideal response, and rankings of several model responses to one prompt.
This module makes the first two without people, in the world of the ``"stories"`` corpus
(`gptlib.data.make_stories`), so a model pre-trained on that corpus already knows the words;
`gptlib.labeler.Labeler` makes the rankings.

- `make_instructions` draws instructions from a seeded grammar ("Write a short story about a cat
  named Pia.", "List three animals.", ...);
- `demonstration` writes a response to one, like a labeler's demonstration: ideal, or with one
  of the flaws a hurried writer makes (`demonstrations` mixes them at a given rate);
- `encode_prompt`, `encode_example` and `respond` turn instructions into token ids and sample
  a model's responses; `label_comparisons` turns the labeler's rankings of K responses into
  the preference pairs the reward model and DPO learn from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

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
)
from .data import _a as _with_article

if TYPE_CHECKING:
    from .alignment import Comparisons, Rollout
    from .labeler import Labeler
    from .model import GPT

__all__ = [
    "END_OF_TEXT",
    "FLAWS",
    "KINDS",
    "PROMPT_TOKENS",
    "Instruction",
    "demonstration",
    "demonstrations",
    "encode_example",
    "encode_prompt",
    "end_of_text_id",
    "label_comparisons",
    "make_instructions",
    "respond",
]

KINDS = ("pet", "lost", "count", "list")
FLAWS = ("unfinished", "repeats", "runs_on")
_STORY_SENTENCES = (3, 5)
_SHORT_SENTENCES = (1, 2)
PROMPT_TOKENS = 28  # every prompt is left-padded with newlines to this many tokens
END_OF_TEXT = "<|endoftext|>"  # ends every response


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

    Taught in notebooks/12_instructgpt.ipynb. The same (n, seed, kinds) always gives the same list;
    use different seeds for the SFT, reward-model, RL and evaluation prompts, as InstructGPT
    kept separate prompt sets for each stage (Ouyang et al. 2022, §3.2).
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

    Taught in notebooks/12_instructgpt.ipynb.
    The details the instruction leaves open (the owner, the
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

    Taught in notebooks/12_instructgpt.ipynb. Human demonstrations are not all perfect, and SFT
    imitates whatever they do; a reward model learned from rankings can see the flaws, and RL
    against it can improve on the SFT model, as InstructGPT's PPO models are preferred to its
    SFT models (Ouyang et al. 2022, §4.1, Figure 1).
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

    Taught in notebooks/12_instructgpt.ipynb. `GPT` has no padding mask, so prompts of different
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


_SENTENCE_END = re.compile(r'[.!?]"?(?=\s|$)')


def _sentences(text: str) -> list[str]:
    """The text cut after each sentence-ending mark (a closing quote stays with its sentence)."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()].strip())
        start = match.end()
    rest = text[start:].strip()
    return [p for p in pieces + ([rest] if rest else []) if p]


def end_of_text_id(tokenizer: Any) -> int:
    """The id of the tokenizer's end-of-text token, which ends every response."""
    special = getattr(tokenizer, "special_tokens", {})
    if END_OF_TEXT not in special:
        raise ValueError(
            f"the tokenizer has no {END_OF_TEXT} token to end responses with; use a "
            "BPETokenizer (it has one by default), e.g. the one of data/checkpoints/bpe_stories"
        )
    return special[END_OF_TEXT]


def encode_example(
    tokenizer: Any, instruction: Instruction, response: str, length: int = PROMPT_TOKENS
) -> tuple[list[int], list[int]]:
    """One SFT example: the padded prompt's ids and the response's ids, end-of-text last."""
    ids = tokenizer.encode(response) + [end_of_text_id(tokenizer)]
    return encode_prompt(tokenizer, instruction, length), ids


def respond(
    model: GPT,
    tokenizer: Any,
    instructions: Sequence[Instruction],
    n: int = 1,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    prompt_length: int = PROMPT_TOKENS,
) -> tuple[Rollout, list[str]]:
    """Sample n responses to each instruction: the rollout (rows in instruction order, the n
    responses of an instruction side by side) and the decoded texts.

    Taught in notebooks/12_instructgpt.ipynb.
    """
    from .alignment import generate_responses

    eos = end_of_text_id(tokenizer)
    prompts = [encode_prompt(tokenizer, i, prompt_length) for i in instructions for _ in range(n)]
    generator = torch.Generator().manual_seed(seed)
    rollout = generate_responses(
        model, prompts, max_new_tokens, eos, temperature, generator=generator
    )
    return rollout, [tokenizer.decode(r) for r in rollout.responses(eos)]


def label_comparisons(
    labeler: Labeler, instructions: Sequence[Instruction], rollout: Rollout, texts: Sequence[str]
) -> Comparisons:
    """Rank the K responses of each instruction with the labeler, keeping every unequal pair.

    Taught in notebooks/12_instructgpt.ipynb. `rollout` and `texts` come from `respond(..., n=K)`;
    the result holds all rows and the labeler's (chosen, rejected) pairs, and is all the
    reward model and DPO will know of the labeler.
    """
    from .alignment import Comparisons

    k, rest = divmod(len(texts), len(instructions))
    if rest or k < 2 or len(rollout.idx) != len(texts):
        raise ValueError(
            f"need K >= 2 responses per instruction, in order: got {len(texts)} texts and "
            f"{len(rollout.idx)} rows for {len(instructions)} instructions"
        )
    pairs = [
        (g * k + chosen, g * k + rejected)
        for g, instruction in enumerate(instructions)
        for chosen, rejected in labeler.preference_pairs(instruction, texts[g * k : (g + 1) * k])
    ]
    group = torch.arange(len(instructions)).repeat_interleave(k)
    return Comparisons(rollout.idx, rollout.response_mask, group, torch.tensor(pairs).view(-1, 2))
