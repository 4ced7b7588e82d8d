"""The tokenizer of a training run: chosen by name, saved beside the checkpoint, read back.

Taught in notebooks/02_first_gpt.ipynb (a checkpoint's tokenizer) and
notebooks/03_tokenization.ipynb (the tokenizers themselves, in `gptlib.tokenizers`).

A run can use a `CharTokenizer`, a trained `BPETokenizer`, or OpenAI's "gpt2" / "cl100k_base"
encodings through `NamedEncoding`, whose file holds only the name (the ranks are read offline
by `gptlib.tokenizers.get_encoding`). Each writes a JSON file with a "format" tag that
`load_tokenizer` dispatches on.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .bpe import BPETokenizer
from .tokenizer_io import check_text, read_tokenizer_file, token_id_list
from .tokenizers import CharTokenizer

__all__ = [
    "TOKENIZER_KINDS",
    "TOKENIZERS",
    "NamedEncoding",
    "end_of_text_id",
    "load_tokenizer",
    "make_tokenizer",
    "save_tokenizer",
    "tokenizer_vocab_size",
]

TOKENIZER_KINDS = ("char", "bpe", "gpt2", "cl100k_base")
END_OF_TEXT = "<|endoftext|>"


class NamedEncoding:
    """OpenAI's "gpt2" or "cl100k_base" encoding with the tokenizer interface training uses.

    The ranks are read offline by `gptlib.tokenizers.get_encoding`; the saved file holds only
    the name. `encode` treats text such as "<|endoftext|>" as ordinary text.
    """

    FORMAT = "gptlib-named-encoding"

    def __init__(self, name: str) -> None:
        from .tokenizers import get_encoding

        self.name = name
        self.encoding = get_encoding(name)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.encoding.n_vocab

    @property
    def eot_token(self) -> int:
        """Id of <|endoftext|>."""
        return self.encoding.eot_token

    def encode(self, text: str) -> list[int]:
        """Token ids of text; special-token text is encoded as plain text."""
        return self.encoding.encode_ordinary(check_text(text, "encode"))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of one sequence of token ids; ValueError for an id outside the vocabulary and
        TypeError for floats or a batch (see `gptlib.tokenizer_io.token_id_list`)."""
        ids = token_id_list(ids)
        try:
            if any(not 0 <= i < self.vocab_size for i in ids):
                raise KeyError
            return self.encoding.decode(ids)
        except KeyError:  # tiktoken's error for an id it does not have (cl100k has gaps)
            bad = next(i for i in ids if not 0 <= i < self.vocab_size or not self._known(i))
            raise ValueError(
                f"token id {bad} is not in the {self.name!r} encoding (ids 0-"
                f"{self.vocab_size - 1}); decode ids made by the same tokenizer"
            ) from None

    def _known(self, token_id: int) -> bool:
        try:
            self.encoding.decode_single_token_bytes(token_id)
        except KeyError:
            return False
        return True

    def save(self, path: str | Path) -> None:
        """Write {"format", "name"} to a JSON file."""
        Path(path).write_text(json.dumps({"format": self.FORMAT, "name": self.name}) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> NamedEncoding:
        """Read a file written by `save`; ValueError naming the file if it is damaged."""
        name = read_tokenizer_file(path, cls.FORMAT, "NamedEncoding").get("name")
        if not isinstance(name, str):
            raise ValueError(
                f'{path} is a damaged NamedEncoding file: it needs "name", an encoding name '
                f"such as 'gpt2', and has {name!r}"
            )
        return cls(name)

    def __repr__(self) -> str:
        return f"NamedEncoding({self.name!r}, vocab_size={self.vocab_size})"


def make_tokenizer(kind: str, text: str = "", vocab_size: int = 512) -> Any:
    """The tokenizer of kind "char", "bpe" (trained on text to vocab_size ids), "gpt2" or
    "cl100k_base"; a ValueError names the kinds for any other."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    if kind in ("gpt2", "cl100k_base"):
        return NamedEncoding(kind)
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")


TOKENIZERS: dict[str, type] = {
    "gptlib-char": CharTokenizer,
    "gptlib-byte-level-bpe": BPETokenizer,
    NamedEncoding.FORMAT: NamedEncoding,
}


def save_tokenizer(tokenizer: Any, path: str | Path) -> None:
    """Write a tokenizer's JSON file atomically (a temporary file renamed over path).

    Raises TypeError for a tokenizer of a kind `load_tokenizer` could not read back.
    """
    if not isinstance(tokenizer, tuple(TOKENIZERS.values())):
        raise TypeError(
            f"cannot save a {type(tokenizer).__name__} with a run; use a gptlib CharTokenizer, "
            "BPETokenizer or NamedEncoding (gptlib.prepare.make_tokenizer), or no tokenizer"
        )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tokenizer.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tokenizer(path: str | Path) -> Any:
    """Read a tokenizer file written by `save_tokenizer`, choosing the class from its "format"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: no tokenizer file there")
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a tokenizer file ({err})") from err
    if kind not in TOKENIZERS:
        raise ValueError(
            f"{path} holds an unknown tokenizer format {kind!r}; known: {list(TOKENIZERS)}"
        )
    return TOKENIZERS[kind].load(path)


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """Number of ids a tokenizer can produce (``vocab_size``, or a tiktoken Encoding's
    ``n_vocab``); a TypeError for an object that is no tokenizer."""
    size = getattr(tokenizer, "vocab_size", getattr(tokenizer, "n_vocab", None))
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size)
    if not isinstance(size, int):
        raise TypeError(f"{type(tokenizer).__name__} is not a tokenizer (no vocab_size)")
    return size


def end_of_text_id(tokenizer: Any) -> int | None:
    """The id that ends a document: <|endoftext|> where the tokenizer has one, else None."""
    if isinstance(tokenizer, NamedEncoding):
        return tokenizer.eot_token
    return getattr(tokenizer, "special_tokens", {}).get(END_OF_TEXT)
