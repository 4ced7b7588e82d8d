"""Preparing text for training: a run's tokenizer, and memory-mapped token files of any text.

No chapter needs it (the book's corpora fit in memory, as notebooks/02_first_gpt.ipynb shows);
README's "Train your own" uses it to train on a corpus of any size.

``python -m gptlib.prepare PATH --out DIR --tokenizer gpt2`` turns a UTF-8 text file, or a
folder of them, into ``DIR/tokens.bin`` (every token id, uint16 when the vocabulary has at most
65,536 ids, else uint32), ``DIR/tokens.json`` (dtype, counts, where validation starts) and
``DIR/tokenizer.json``. ``python -m gptlib.train --tokens DIR`` then trains on it through
`open_tokens`, which memory-maps the file: a corpus of many gigabytes is read window by window,
never loaded whole. The last ``--val-fraction`` of the tokens is the validation part, as
`gptlib.data.split` does for a text.

Tokenizers (`gptlib.run_tokenizer.TOKENIZER_KINDS`): ``char`` (one id per character of the text), ``bpe`` (a
byte-level BPE trained on the text, `gptlib.bpe`), ``gpt2`` and ``cl100k_base`` (OpenAI's
encodings, read offline by `gptlib.tokenizers.get_encoding`), or ``--tokenizer-file`` for one
saved earlier (a checkpoint's tokenizer.json). Files of a folder are documents: each ends with
the end-of-text token where the tokenizer has one, else with a blank line. Text is read in
pieces cut after a newline that has a non-space character on both sides; the GPT-2 and GPT-4
split patterns cut there too, so the ids equal those of encoding each file whole.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .run_tokenizer import (
    TOKENIZER_KINDS,
    end_of_text_id,
    load_tokenizer,
    make_tokenizer,
    save_tokenizer,
)
from .sampling import check_integer

__all__ = [
    "PreparedTokens",
    "encode_documents",
    "open_tokens",
    "prepare",
    "read_documents",
    "text_files",
]

TOKENS_FILE, TOKENS_META, TOKENIZER_FILE = "tokens.bin", "tokens.json", "tokenizer.json"
TOKENS_FORMAT = "gptlib-tokens-v1"


def text_files(path: str | Path) -> list[Path]:
    """The files to read: path itself, or every file under a folder (sorted, hidden ones skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; give a text file or a folder of them")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ValueError(f"{path} holds no files to read")
    return files


def _last_cut(text: str) -> int:
    """Index just after the last newline with a non-space character on both sides, or 0."""
    i = text.rfind("\n", 0, len(text) - 1)
    while i > 0:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", 0, i)
    return 0


def _pieces(file: Path, chunk_chars: int) -> Iterator[str]:
    """The text of file in pieces of about chunk_chars characters, cut by `_last_cut` (a file
    with no such newline comes whole)."""
    with open(file, encoding="utf-8", newline="") as handle:
        carry = ""
        while block := _read(handle, file, chunk_chars):
            text = carry + block
            cut = _last_cut(text)
            if cut:
                yield text[:cut]
            carry = text[cut:]
        if carry:
            yield carry


def _read(handle: Any, file: Path, chars: int) -> str:
    """The next chars characters of a UTF-8 file, or a ValueError that names the file."""
    try:
        return handle.read(chars)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{file} is not UTF-8 text past its first 8 KiB ({err.reason} at byte "
            f"{err.start} of a block); convert it to UTF-8 or leave it out"
        ) from None


def _looks_like_text(file: Path) -> bool:
    """Whether the first 8 KiB hold no NUL byte and decode as UTF-8 (git's binary test, plus
    UTF-8)."""
    import codecs

    with open(file, "rb") as handle:
        head = handle.read(8192)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def _documents(files: Sequence[Path], chunk_chars: int) -> Iterator[Iterator[str]]:
    """One iterator of pieces per text file; a folder's binary files are skipped with a note."""
    for file in files:
        if not _looks_like_text(file):
            if len(files) == 1:
                raise ValueError(f"{file} is not UTF-8 text")
            print(f"skipping {file}: not UTF-8 text", file=sys.stderr)
            continue
        yield _pieces(file, chunk_chars)


def read_documents(path: str | Path, max_chars: int | None = None) -> list[str]:
    """The text of each text file under path (see `text_files`), at most max_chars in all."""
    documents, size = [], 0
    for pieces in _documents(text_files(path), 1 << 20):
        documents.append("".join(pieces)[: None if max_chars is None else max_chars - size])
        size += len(documents[-1])
        if max_chars is not None and size >= max_chars:
            break
    return documents


def encode_documents(
    tokenizer: Any, documents: Iterable[Iterable[str]], dtype: Any = np.int64
) -> Iterator[np.ndarray]:
    """Token ids of each document's pieces, each document followed by its end (see module doc)."""
    eot = end_of_text_id(tokenizer)
    end = np.array([eot] if eot is not None else tokenizer.encode("\n\n"), dtype=dtype)
    encode = getattr(tokenizer, "encode_ordinary", tokenizer.encode)
    for pieces in documents:
        for piece in pieces:
            yield np.asarray(encode(piece), dtype=dtype)
        yield end


@dataclass
class PreparedTokens:
    """A folder written by `prepare`, opened as memory maps (nothing is copied into memory).

    ``train`` and ``val`` are 1-D NumPy memory maps of token ids (the first and the last part
    of one file); ``meta`` is the folder's tokens.json.
    """

    path: Path
    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary the ids come from."""
        return int(self.meta["vocab_size"])

    def tokenizer(self) -> Any:
        """The tokenizer that made the ids (tokenizer.json in the folder)."""
        return load_tokenizer(self.path / TOKENIZER_FILE)


def open_tokens(path: str | Path) -> PreparedTokens:
    """Open a token folder made by `prepare` without reading it into memory.

    Raises FileNotFoundError for a folder without tokens.json, ValueError for a tokens.json
    that is damaged or a token file whose size does not match it (truncated, or from another
    run).
    """
    path = Path(path)
    meta_path = path / TOKENS_META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing; make it with python -m gptlib.prepare TEXT --out {path}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); prepare it again") from err
    if not isinstance(meta, dict) or meta.get("format") != TOKENS_FORMAT:
        raise ValueError(f"{meta_path} is not a gptlib token file (format {TOKENS_FORMAT})")
    dtype = meta.get("dtype")
    counts = [meta.get(k) for k in ("n_tokens", "n_train", "vocab_size")]
    if (
        dtype not in ("uint16", "uint32")
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts)
        or not counts[1] < counts[0]
    ):
        raise ValueError(
            f"{meta_path} is damaged: it needs dtype uint16 or uint32 and counts n_train < "
            f"n_tokens and vocab_size, positive integers (it has dtype={dtype!r}, "
            f"n_tokens={counts[0]!r}, n_train={counts[1]!r}, vocab_size={counts[2]!r}); "
            "prepare the folder again"
        )
    dtype = np.dtype(dtype)
    data_path = path / TOKENS_FILE
    expected = int(meta["n_tokens"]) * dtype.itemsize
    size = data_path.stat().st_size if data_path.is_file() else None
    if size != expected:
        raise ValueError(
            f"{data_path} holds {size} bytes, but {TOKENS_META} promises {meta['n_tokens']} "
            f"{dtype.name} tokens ({expected} bytes): truncated or from another run; prepare again"
        )
    tokens = np.memmap(data_path, dtype=dtype, mode="r")
    n_train = int(meta["n_train"])
    return PreparedTokens(path, tokens[:n_train], tokens[n_train:], meta)


def prepare(
    source: str | Path,
    out: str | Path,
    tokenizer: str | Any = "gpt2",
    vocab_size: int = 512,
    val_fraction: float = 0.1,
    bpe_train_chars: int = 10_000_000,
    chunk_chars: int = 1 << 20,
) -> PreparedTokens:
    """Tokenize a text file or folder into out/tokens.bin and return it opened (see module doc).

    tokenizer is a kind from TOKENIZER_KINDS or a tokenizer object; "char" reads the text once
    more to collect its characters, "bpe" trains on its first bpe_train_chars characters.
    Raises FileExistsError if out already holds tokens (or is a file), ValueError for bad
    settings or a file that is not UTF-8 (named); a failure leaves no half-written file.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    for name, value in (("vocab_size", vocab_size), ("bpe_train_chars", bpe_train_chars),
                        ("chunk_chars", chunk_chars)):  # fmt: skip
        check_integer(name, value, 1, "a positive integer")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out must be a folder to write the tokens into")
    if (out / TOKENS_META).exists():
        raise FileExistsError(f"{out} already holds prepared tokens; choose another --out")
    files = text_files(source)
    if isinstance(tokenizer, str):
        kind, sample = tokenizer, ""
        if kind == "char":
            chars: set[str] = set("\n")
            for pieces in _documents(files, chunk_chars):
                for piece in pieces:
                    chars.update(piece)
            sample = "".join(sorted(chars))
        elif kind == "bpe":
            parts, size = [], 0
            for pieces in _documents(files, chunk_chars):
                for piece in pieces:
                    parts.append(piece[: bpe_train_chars - size])
                    size += len(parts[-1])
                if size >= bpe_train_chars:
                    break
            sample = "".join(parts)
        tokenizer = make_tokenizer(kind, sample, vocab_size)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (TOKENS_FILE + ".tmp")
    n_tokens = 0
    try:
        with open(tmp, "wb") as handle:
            documents = list(_documents(files, chunk_chars))  # lazy pieces: one file at a time
            for ids in encode_documents(tokenizer, documents, dtype):
                ids.tofile(handle)
                n_tokens += len(ids)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written token file is left behind
        raise
    n_train = int(round(n_tokens * (1.0 - val_fraction)))
    if not 0 < n_train < n_tokens:
        tmp.unlink()
        raise ValueError(f"{source} gives {n_tokens} tokens, too few to split; add text")
    os.replace(tmp, out / TOKENS_FILE)
    save_tokenizer(tokenizer, out / TOKENIZER_FILE)
    meta = {
        "format": TOKENS_FORMAT,
        "dtype": np.dtype(dtype).name,
        "n_tokens": n_tokens,
        "n_train": n_train,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": repr(tokenizer),
        "source": str(source),
        "files": len(documents),
        "val_fraction": val_fraction,
    }
    _write_meta(out, meta)  # last: a folder without it is unfinished
    return open_tokens(out)


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    tmp = out / (TOKENS_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / TOKENS_META)


def main(argv: Sequence[str] | None = None) -> PreparedTokens:
    """Run `python -m gptlib.prepare` (see `--help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m gptlib.prepare",
        description="Tokenize a UTF-8 text file or folder into a memory-mapped token file "
        "for python -m gptlib.train --tokens DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", nargs="?", help="a text file, or a folder of text files")
    parser.add_argument("--corpus", help="a built-in corpus instead (gptlib.data.CORPORA)")
    parser.add_argument("--out", required=True, help="folder to write the token file into")
    parser.add_argument("--tokenizer", default="gpt2", choices=TOKENIZER_KINDS, help="encoding")
    parser.add_argument("--tokenizer-file", help="a saved tokenizer.json to use instead")
    parser.add_argument("--vocab-size", type=int, default=512, help="vocabulary of --tokenizer bpe")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share kept for validation")
    parser.add_argument(
        "--bpe-train-chars", type=int, default=10_000_000, help="BPE learns from this many chars"
    )
    args = parser.parse_args(argv)
    try:
        if (args.source is None) == (args.corpus is None):
            raise ValueError("give either a text file or folder, or --corpus NAME (not both)")
        tokenizer: Any = args.tokenizer
        if args.tokenizer_file:
            tokenizer = load_tokenizer(args.tokenizer_file)
        settings = (args.out, tokenizer, args.vocab_size, args.val_fraction, args.bpe_train_chars)
        if args.corpus is None:
            tokens = prepare(args.source, *settings)
        else:
            from .data import load_corpus

            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / f"{args.corpus}.txt"
                source.write_text(load_corpus(args.corpus), encoding="utf-8", newline="")
                tokens = prepare(source, *settings)
                tokens.meta["source"] = f"corpus {args.corpus}"
                _write_meta(tokens.path, tokens.meta)
    except (OSError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(
        f"{tokens.meta['n_tokens']:,} tokens ({tokens.meta['dtype']}) from "
        f"{tokens.meta['files']} file(s), {len(tokens.train):,} for training and "
        f"{len(tokens.val):,} for validation, in {tokens.path}"
    )
    return tokens


if __name__ == "__main__":
    main()
