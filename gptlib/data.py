"""Text corpora that every machine already has, a story generator, and random training batches.

Taught in notebooks/02_first_gpt.ipynb.

Nothing here downloads anything. Two corpora are real human-written text that ships with
CPython itself:

- ``"python-docs"``: the Python language reference as plain English prose (the module
  ``pydoc_data.topics`` that powers ``help("assert")``), about 465 KB on Python 3.11;
- ``"python-stdlib"``: the source of the standard library's top-level ``.py`` files, about
  4.7 MB of Python code on Python 3.11.

Both depend on the Python version that runs them (a new CPython release edits its docs and
library), so a notebook should print their sizes rather than promise exact ones.

The third corpus, ``"stories"``, is generated here from a small hand-written grammar with a
fixed seed, so it is identical on every machine and every Python version. Its sentences
repeat names and objects within a story, which gives a small model something to copy: the
material for the induction-head experiments in notebooks/15_attention_maps.ipynb.

``"code-tasks"`` is generated too: the training problems of `gptlib.code_tasks` (small Python
functions with HumanEval-style docstrings), the Codex chapter's code model's training text.
"""

from __future__ import annotations

import functools
import random
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

__all__ = ["CORPORA", "get_batch", "load_corpus", "make_stories", "split"]

T = TypeVar("T", str, list, torch.Tensor)


def _python_docs() -> str:
    """Join the language-reference topics of the running Python, in sorted key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some minimal Python builds leave pydoc_data out
        raise RuntimeError(
            "This Python has no pydoc_data module, so the 'python-docs' corpus is missing. "
            "Use load_corpus('stories') or a full CPython build (python.org, pyenv, conda)."
        ) from exc
    return "\n\n".join(topics[key] for key in sorted(topics))


def _python_stdlib() -> str:
    """Join the standard library's top-level .py files, sorted by file name."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"), key=lambda path: path.name)
    if not files:
        raise RuntimeError(
            f"No .py files found in the standard library folder {stdlib}; this Python ships "
            "its library compiled only. Use load_corpus('python-docs') or load_corpus('stories')."
        )
    return "".join(
        f"# ===== {path.name} =====\n{path.read_text(encoding='utf-8')}\n" for path in files
    )


# The grammar of the "stories" corpus. Every word list below was written for this project.
_NAMES = ["Mila", "Tobin", "Ada", "Rufus", "Nell", "Omar", "Pia", "Sami", "Lena", "Bruno",
          "Kira", "Theo", "Ines", "Juno", "Wren", "Felix"]  # fmt: skip
_ANIMALS = {"cat": "cats", "dog": "dogs", "fox": "foxes", "owl": "owls", "goat": "goats",
            "duck": "ducks", "frog": "frogs", "mouse": "mice"}  # fmt: skip
_COLOURS = ["red", "blue", "green", "yellow", "little", "old", "orange", "striped"]
_THINGS = ["kite", "hat", "ball", "key", "boat", "drum", "lamp", "book", "cup", "bell"]
_PLACES = ["the river", "the hill", "the market", "the forest", "the beach", "the garden",
           "the bridge", "the farm", "the library", "the harbour"]  # fmt: skip
_HIDING = ["under the bridge", "behind the shed", "in the tall grass", "on the roof",
           "inside an old boot", "under a pile of leaves", "next to the well"]  # fmt: skip
_GLAD = ["happy", "glad", "proud", "cheerful"]
_FOODS = ["bread", "soup", "cheese", "porridge", "rice", "honey cake"]
_NUMBERS = ["one", "two", "three", "four", "five"]


def _a(phrase: str) -> str:
    """Put "a" or "an" in front of a noun phrase."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _lost_and_found(rng: random.Random) -> str:
    hero, friend = rng.sample(_NAMES, 2)
    thing = f"{rng.choice(_COLOURS)} {rng.choice(_THINGS)}"
    return (
        f"{hero} lived near {rng.choice(_PLACES)}. One day {friend} lost {_a(thing)}. "
        f"{hero} and {friend} looked for the {thing} everywhere. "
        f"At last {hero} found the {thing} {rng.choice(_HIDING)}. "
        f'{friend} said, "Thank you, {hero}!" {hero} and {friend} were {rng.choice(_GLAD)}.'
    )


def _pet(rng: random.Random) -> str:
    owner, pet_name = rng.sample(_NAMES, 2)
    animal = rng.choice(list(_ANIMALS))
    food = rng.choice(_FOODS)
    return (
        f"{owner} had {_a(animal)} called {pet_name}. Every morning {pet_name} the {animal} "
        f"ate {food}. One morning there was no {food}, so {owner} went to "
        f"{rng.choice(_PLACES)} to buy {food}. {pet_name} the {animal} ate the {food} "
        f"and was {rng.choice(_GLAD)} again."
    )


def _trade(rng: random.Random) -> str:
    first, second = rng.sample(_NAMES, 2)
    thing_a, thing_b = rng.sample(_THINGS, 2)
    return (
        f"{first} had {_a(thing_a)} and {second} had {_a(thing_b)}. "
        f"{first} wanted the {thing_b}, and {second} wanted the {thing_a}. "
        f"So {first} gave the {thing_a} to {second}, and {second} gave the {thing_b} to {first}. "
        f"Now {first} has {_a(thing_b)} and {second} has {_a(thing_a)}."
    )


def _counting(rng: random.Random) -> str:
    name = rng.choice(_NAMES)
    animal, plural = rng.choice(list(_ANIMALS.items()))
    words = _NUMBERS[: rng.randint(2, len(_NUMBERS))]
    counted = ", ".join(f"{word} {plural}" for word in words[1:])
    return (
        f"{name} went to {rng.choice(_PLACES)} and counted: one {animal}, {counted}. "
        f'"I saw {words[-1]} {plural}," said {name}.'
    )


_STORY_KINDS: list[Callable[[random.Random], str]] = [_lost_and_found, _pet, _trade, _counting]


def make_stories(n_stories: int = 2000, seed: int = 0) -> str:
    """Generate short stories from a fixed grammar, one per paragraph, identical for a given seed.

    Taught in notebooks/02_first_gpt.ipynb.

    The generator uses ``random.Random(seed)``, whose integer seeding and ``choice``/``sample``
    are stable across Python 3 releases, so the text is the same everywhere.
    """
    if not isinstance(n_stories, int) or n_stories < 1:
        raise ValueError(f"n_stories must be a positive integer, got {n_stories!r}.")
    rng = random.Random(seed)
    return "\n\n".join(rng.choice(_STORY_KINDS)(rng) for _ in range(n_stories)) + "\n"


def _code_tasks() -> str:
    from .code_tasks import training_text  # the Codex chapter's problems (gptlib.code_tasks)

    return training_text()


CORPORA: dict[str, str] = {
    "python-docs": "the Python language reference as English prose (pydoc_data.topics)",
    "python-stdlib": "the source code of the Python standard library's top-level .py files",
    "stories": "short stories from gptlib's own seeded grammar (make_stories)",
    "code-tasks": "small Python functions in HumanEval's format from gptlib.code_tasks' grammar",
}

_LOADERS: dict[str, Callable[[], str]] = {
    "python-docs": _python_docs,
    "python-stdlib": _python_stdlib,
    "stories": make_stories,
    "code-tasks": _code_tasks,
}


@functools.cache
def _load_full(name: str) -> str:
    return _LOADERS[name]()


def load_corpus(name: str = "python-docs", max_chars: int | None = None) -> str:
    """Return one of the offline corpora named in ``CORPORA`` as a single string.

    Taught in notebooks/02_first_gpt.ipynb.

    ``max_chars`` keeps only the first ``max_chars`` characters (handy for quick experiments).
    """
    if name not in _LOADERS:
        known = ", ".join(repr(key) for key in CORPORA)
        raise ValueError(f"Unknown corpus {name!r}. Known corpora: {known}.")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer or None, got {max_chars!r}.")
    text = _load_full(name)
    return text if max_chars is None else text[:max_chars]


def split(data: T, val_fraction: float = 0.1) -> tuple[T, T]:
    """Cut a text, token list or tensor into a training part and a validation part at the end.

    Taught in notebooks/02_first_gpt.ipynb.

    The validation part is the last ``val_fraction`` of the data, not a random sample, so no
    window of validation text is also seen in training.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    n_train = int(round(len(data) * (1.0 - val_fraction)))
    if n_train == 0 or n_train == len(data):
        raise ValueError(
            f"Data of length {len(data)} is too short to split with val_fraction={val_fraction}: "
            "one part would be empty. Use more data or a different val_fraction."
        )
    return data[:n_train], data[n_train:]


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``batch_size`` random windows of ``block_size`` tokens; targets are shifted by one.

    Taught in notebooks/02_first_gpt.ipynb.

    Returns ``(x, y)``, two LongTensors of shape ``(batch_size, block_size)`` where
    ``y[b, t] == x[b, t + 1]``: at every position the model learns to predict the next token.
    Pass a seeded ``torch.Generator`` to make the batches reproducible.
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError(
            "data must be a 1-D tensor of token ids, e.g. torch.tensor(tokenizer.encode(text)); "
            f"got {type(data).__name__}"
            + (f" with shape {tuple(data.shape)}" if isinstance(data, torch.Tensor) else "")
            + "."
        )
    if batch_size < 1 or block_size < 1:
        raise ValueError(
            f"batch_size and block_size must be positive, got {batch_size} and {block_size}."
        )
    if len(data) < block_size + 1:
        raise ValueError(
            f"The data has {len(data)} tokens, but a window of block_size={block_size} needs "
            f"block_size + 1 = {block_size + 1} (inputs plus the shifted targets). "
            "Use a smaller block_size or more data."
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    positions = starts[:, None] + torch.arange(block_size)
    x = data[positions].long()
    y = data[positions + 1].long()
    return x.to(device), y.to(device)
