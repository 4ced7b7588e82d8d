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

``CORPORA`` is a registry: another module adds a corpus with
``CORPORA["name"] = Corpus(load_function, "one line saying what it is")``.

Training draws its batches from a **batch source** (`BatchSource`): a 1-D tensor of token ids,
a memory-mapped token file written by ``python -m gptlib.prepare`` (`gptlib.prepare.open_tokens`),
or any object with a ``get_batch`` method, such as prompt/response pairs whose prompt tokens
are masked out of the loss.

``"code-tasks"`` is generated too: the training problems of `gptlib.code_tasks` (small Python
functions with HumanEval-style docstrings), the training text of the code model of
notebooks/11_codex.ipynb.
"""

from __future__ import annotations

import functools
import math
import numbers
import random
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from .sampling import check_integer

__all__ = [
    "CORPORA",
    "IGNORE_INDEX",
    "BatchSource",
    "Corpus",
    "TokenWindows",
    "as_batch_source",
    "check_batch",
    "get_batch",
    "load_corpus",
    "make_stories",
    "repeat_passages",
    "split",
]

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
    n_stories = check_integer("n_stories", n_stories, 1, "a positive integer")
    rng = random.Random(seed)
    return "\n\n".join(rng.choice(_STORY_KINDS)(rng) for _ in range(n_stories)) + "\n"


def _code_tasks() -> str:
    from .code_tasks import training_text  # notebooks/11_codex.ipynb's problems (gptlib.code_tasks)

    return training_text()


@dataclass(frozen=True)
class Corpus:
    """A named offline corpus: the function that returns its text, and what it is in one line.

    ``str(corpus)`` is the description, so ``f"{name}: {corpus}"`` reads well.
    """

    load: Callable[[], str]
    description: str

    def __str__(self) -> str:
        return self.description


CORPORA: dict[str, Corpus] = {
    "python-docs": Corpus(
        _python_docs, "the Python language reference as English prose (pydoc_data.topics)"
    ),
    "python-stdlib": Corpus(
        _python_stdlib, "the source code of the Python standard library's top-level .py files"
    ),
    "stories": Corpus(
        make_stories, "short stories from gptlib's own seeded grammar (make_stories)"
    ),
    "code-tasks": Corpus(
        _code_tasks, "small Python functions in HumanEval's format from gptlib.code_tasks' grammar"
    ),
}


@functools.cache
def _load_full(name: str, load: Callable[[], str]) -> str:
    return load()


def load_corpus(name: str = "python-docs", max_chars: int | None = None) -> str:
    """Return one of the offline corpora named in ``CORPORA`` as a single string.

    Taught in notebooks/02_first_gpt.ipynb.

    ``max_chars`` keeps only the first ``max_chars`` characters (handy for quick experiments).
    """
    if name not in CORPORA:
        known = ", ".join(repr(key) for key in CORPORA)
        raise ValueError(f"Unknown corpus {name!r}. Known corpora: {known}.")
    if max_chars is not None:
        max_chars = check_integer("max_chars", max_chars, 1, "a positive integer or None")
    text = _load_full(name, CORPORA[name].load)
    return text if max_chars is None else text[:max_chars]


def split(data: T, val_fraction: float = 0.1) -> tuple[T, T]:
    """Cut a text, token list or tensor into a training part and a validation part at the end.

    Taught in notebooks/02_first_gpt.ipynb.

    The validation part is the last ``val_fraction`` of the data, not a random sample, so no
    window of validation text is also seen in training.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(f"val_fraction must be a number between 0 and 1, got {val_fraction!r}.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(
            f"split takes a text, a list or a tensor of token ids, got {type(data).__name__}."
        )
    n_train = int(round(len(data) * (1.0 - val_fraction)))
    if n_train == 0 or n_train == len(data):
        raise ValueError(
            f"Data of length {len(data)} is too short to split with val_fraction={val_fraction}: "
            "one part would be empty. Use more data or a different val_fraction."
        )
    return data[:n_train], data[n_train:]


IGNORE_INDEX = -1  # a target equal to this (or to PyTorch's -100) is left out of the loss


def _check_tokens(data: Any) -> None:
    if isinstance(data, torch.Tensor) and data.dim() == 1:
        if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
            raise ValueError(
                f"data holds {data.dtype} values, but token ids are integers: make it with "
                "torch.tensor(tokenizer.encode(text)) (a float tensor would be cut to integers)."
            )
        return
    if isinstance(data, np.ndarray) and data.ndim == 1 and np.issubdtype(data.dtype, np.integer):
        return
    shape = getattr(data, "shape", None)
    raise ValueError(
        "data must be a 1-D tensor of token ids, e.g. torch.tensor(tokenizer.encode(text)), "
        "or a 1-D integer NumPy array such as a memory-mapped token file (gptlib.prepare.open_tokens); "
        f"got {type(data).__name__}" + (f" with shape {tuple(shape)}" if shape else "") + "."
    )


def get_batch(
    data: torch.Tensor | np.ndarray,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``batch_size`` random windows of ``block_size`` tokens; targets are shifted by one.

    Taught in notebooks/02_first_gpt.ipynb.

    Returns ``(x, y)``, two LongTensors of shape ``(batch_size, block_size)`` where
    ``y[b, t] == x[b, t + 1]``: at every position the model learns to predict the next token.
    Pass a seeded ``torch.Generator`` to make the batches reproducible. ``data`` is a 1-D
    tensor, or a 1-D integer NumPy array (a memory-mapped token file is read window by
    window, never loaded whole); both draw the same windows from the same generator.
    """
    _check_tokens(data)
    batch_size = check_integer("batch_size", batch_size, 1, "a positive integer")
    block_size = check_integer("block_size", block_size, 1, "a positive integer")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (or None), got {type(generator).__name__}; "
            "make one with torch.Generator().manual_seed(seed)"
        )
    if len(data) < block_size + 1:
        raise ValueError(
            f"The data has {len(data)} tokens, but a window of block_size={block_size} needs "
            f"block_size + 1 = {block_size + 1} (inputs plus the shifted targets). "
            "Use a smaller block_size or more data."
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    if isinstance(data, torch.Tensor):
        positions = starts[:, None] + torch.arange(block_size)
        x, y = data[positions].long(), data[positions + 1].long()
    else:
        rows = np.stack([data[s : s + block_size + 1] for s in starts.tolist()])
        windows = torch.from_numpy(rows.astype(np.int64))
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    return x.to(device), y.to(device)


@runtime_checkable
class BatchSource(Protocol):
    """Anything training can draw batches from: one method, ``get_batch``.

    ``get_batch(batch_size, block_size, generator, device)`` returns ``(x, y)``, two
    LongTensors of shape ``(batch_size, T)`` with ``1 <= T <= block_size``: the inputs, and the
    target of every position, where ``IGNORE_INDEX`` (-1) or -100 marks a position left out of
    the loss (a prompt token in supervised fine-tuning, padding). Windows of a token stream
    fill the block (T = block_size); a source of short examples may return only as many
    columns as its longest example in the batch needs (`gptlib.alignment.SFTData` does), which
    saves the compute of padding. A source must draw every random choice
    from ``generator``: that is what makes a run reproducible, resumable exactly, and
    independent of the number of processes (`gptlib.train.train` draws the whole global
    batch on every process from the same generator and gives each process its rows).
    Used by `gptlib.train.train` and `gptlib.train.evaluate`; taught in
    notebooks/02_first_gpt.ipynb (`get_batch`, which `TokenWindows` wraps).
    """

    def get_batch(
        self,
        batch_size: int,
        block_size: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (batch_size, T <= block_size) LongTensors; see the class docstring."""
        ...


def check_batch(batch: Any, batch_size: int, block_size: int, source: Any = None) -> tuple:
    """Return (x, y) if a batch source gave two integer tensors of shape (batch_size, T).

    T is block_size for windows of a token stream, and may be less (at least 1) for a source
    of short examples (see `BatchSource`); x and y have the same shape.

    `gptlib.train` checks every batch a `BatchSource` returns with it, so a source that returns
    lists, floats or another shape is named at once instead of failing deep inside the model.
    Raises TypeError or ValueError naming the source, what it returned and what is expected.
    """
    where = f"{type(source).__name__}.get_batch" if source is not None else "get_batch"
    shape = (batch_size, block_size)
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2) or not all(
        isinstance(t, torch.Tensor) for t in batch
    ):
        raise TypeError(
            f"{where} must return (x, y), two integer tensors of shape {shape}; got "
            f"{type(batch).__name__}"
            + (
                f" of {[type(t).__name__ for t in batch]}"
                if isinstance(batch, tuple | list)
                else ""
            )
        )
    for name, t in zip("xy", batch, strict=True):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{where} returned {name} of dtype {t.dtype}; token ids are integers")
        if t.dim() != 2 or t.size(0) != batch_size or not 1 <= t.size(1) <= block_size:
            raise ValueError(
                f"{where} returned {name} of shape {tuple(t.shape)} when asked for "
                f"batch_size={batch_size} windows of block_size={block_size}: expected {shape} "
                f"(or ({batch_size}, T) with 1 <= T <= {block_size} for short examples)"
            )
    if batch[0].shape != batch[1].shape:
        raise ValueError(
            f"{where} returned x of shape {tuple(batch[0].shape)} and y of shape "
            f"{tuple(batch[1].shape)}: the targets must have the inputs' shape"
        )
    return batch[0], batch[1]


class TokenWindows:
    """A `BatchSource` of random windows of one token stream (a tensor or a memory map)."""

    def __init__(self, tokens: torch.Tensor | np.ndarray) -> None:
        _check_tokens(tokens)
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def get_batch(
        self,
        batch_size: int,
        block_size: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows and their next-token targets (see `get_batch`)."""
        return get_batch(self.tokens, batch_size, block_size, generator, device)


def as_batch_source(data: Any, name: str = "data", block_size: int | None = None) -> BatchSource:
    """Wrap a 1-D tensor or NumPy token array in `TokenWindows`; pass a `BatchSource` through.

    With block_size, a token stream too short for one window is refused here, naming `name`.
    """
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if block_size is not None and (data.ndim != 1 or len(data) <= block_size):
            raise ValueError(
                f"{name} must be a 1-D tensor of more than block_size={block_size} token ids "
                "(e.g. torch.tensor(tokenizer.encode(text))) or a memory-mapped token file, "
                f"got shape {tuple(data.shape)}"
            )
        return TokenWindows(data)
    if isinstance(data, BatchSource):
        return data
    raise TypeError(
        f"{name} must be a 1-D tensor of token ids, a memory-mapped token file "
        "(gptlib.prepare.open_tokens) or an object with a get_batch(batch_size, block_size, "
        f"generator, device) method (gptlib.data.BatchSource); got {type(data).__name__}"
    )


def repeat_passages(
    x: torch.Tensor, y: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random share of the windows by a passage of their own text said twice or more.

    Used to train data/checkpoints/char_python_docs for chapter 15. A window of T tokens whose
    first L tokens (T/4 <= L <= T/2) repeat gives a model a lot to gain from copying: once a
    passage recurs, each next token is the one that followed its earlier occurrence. Real text
    holds such repeats too, but a small model on a CPU budget sees too few of them for
    induction heads (Olsson et al. 2022) to form; these windows give it enough. Validation
    windows are never changed.
    """
    if fraction == 0.0:
        return x, y
    B, T = x.shape
    chosen = torch.rand(B, generator=generator) < fraction
    lengths = torch.randint(max(2, T // 4), max(3, T // 2 + 1), (B,), generator=generator)
    x, y = x.clone(), y.clone()
    for row in chosen.nonzero().flatten().tolist():
        text = torch.cat([x[row], y[row, -1:]])[: lengths[row]]
        repeated = text.repeat(math.ceil((T + 1) / len(text)))[: T + 1]
        x[row], y[row] = repeated[:-1], repeated[1:]
    return x, y
