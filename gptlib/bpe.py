"""Byte-level byte-pair encoding (BPE): train a tokenizer on text, encode, decode, save, export.

Taught in notebooks/03_tokenization.ipynb.

A byte-level BPE starts from the 256 single bytes, so it can encode any string, and then
learns merges: the most frequent adjacent pair of tokens becomes a new token, again and
again. Text is first cut into chunks by a regular expression (the GPT-2 or GPT-4 "pre-split"
pattern), and merges never cross a chunk boundary.

Training here is fast because it (1) counts each distinct chunk once, with its frequency,
and (2) after each merge updates the pair counts of only the chunks that contained the
merged pair, instead of recounting every pair of the corpus. ``benchmarks/bpe_train.py``
measures the difference.

Encoding follows the rule tiktoken uses, so ``BPETokenizer.to_tiktoken()`` encodes every
text to the same ids: inside a chunk, repeatedly join the adjacent pair whose joined bytes
form the token of lowest id (the earliest merge), leftmost first.
"""

from __future__ import annotations

import heapq
import json
import numbers
import operator
import warnings
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import regex

from .tokenizer_io import check_text, read_tokenizer_file, token_id_list

if TYPE_CHECKING:
    import tiktoken

__all__ = ["BPETokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "SPLIT_PATTERNS", "train_merges"]

# The pre-split patterns of OpenAI's r50k_base (GPT-2, GPT-3) and cl100k_base (GPT-3.5, GPT-4)
# encodings, in the possessive form that tiktoken publishes (same splits as the originals).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
SPLIT_PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}
# pattern=None means no pre-split: the whole text is one chunk (fine for small texts only).
_WHOLE_TEXT = r"[\s\S]+"

_FORMAT = "gptlib-byte-level-bpe"


def _pattern_regex(pattern: str | None) -> str:
    """Return the regular expression for a pattern name, or raise a clear error."""
    if pattern is None:
        return _WHOLE_TEXT
    if pattern not in SPLIT_PATTERNS:
        known = ", ".join(repr(name) for name in SPLIT_PATTERNS)
        raise ValueError(f"Unknown pre-split pattern {pattern!r}. Use one of {known} or None.")
    return SPLIT_PATTERNS[pattern]


def _merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right) by ``new_id``."""
    first, second = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(
    chunk_counts: Mapping[bytes, int], n_merges: int
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Learn up to ``n_merges`` BPE merges from chunks (as bytes) and how often each occurs.

    Taught in notebooks/03_tokenization.ipynb.

    Returns the merges in order (merge ``k`` creates token ``256 + k``) and the vocabulary
    (token id -> bytes). Ties between equally frequent pairs go to the smallest pair of ids.
    A pair whose joined bytes already form a token is skipped, so every token is unique.
    Raises TypeError for chunk_counts that is not a mapping of bytes to positive counts or an
    n_merges that is not an integer, ValueError for a negative n_merges.
    """
    if isinstance(n_merges, bool) or not isinstance(n_merges, numbers.Integral):
        raise TypeError(f"n_merges must be an integer >= 0, got {n_merges!r}")
    if n_merges < 0:
        raise ValueError(f"n_merges must be an integer >= 0, got {n_merges}")
    if not isinstance(chunk_counts, Mapping) or not all(
        isinstance(chunk, bytes) and isinstance(count, int) and count > 0
        for chunk, count in chunk_counts.items()
    ):
        raise TypeError("chunk_counts must map each chunk (bytes) to how often it occurs (int > 0)")
    words = [list(chunk) for chunk in chunk_counts]
    weights = list(chunk_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks holding it
    for index, (ids, weight) in enumerate(zip(words, weights, strict=True)):
        for pair in pairwise(ids):
            pair_counts[pair] += weight
            where[pair].add(index)
    # A max-heap by count (smallest pair first on ties). Entries go stale when a count
    # changes; a fresh entry is pushed then, and stale ones are dropped when popped.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    vocab = [bytes([b]) for b in range(256)]
    known = set(vocab)
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue
        joined = vocab[pair[0]] + vocab[pair[1]]
        if joined in known:
            continue
        new_id = len(vocab)
        vocab.append(joined)
        known.add(joined)
        merges.append(pair)
        # Only pairs touching the merged tokens change; pairs with the new token are new.
        touched = set(pair)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for index in where.pop(pair):
            ids = words[index]
            new_ids = _merge_pair(ids, pair, new_id)
            if len(new_ids) == len(ids):
                continue  # a stale index: this chunk lost the pair to an earlier merge
            weight = weights[index]
            for old in pairwise(ids):
                if old[0] in touched or old[1] in touched:
                    delta[old] -= weight
            for new in pairwise(new_ids):
                if new_id in new:
                    delta[new] += weight
                    where[new].add(index)
                elif new[0] in touched or new[1] in touched:
                    delta[new] += weight
            words[index] = new_ids
        for changed, change in delta.items():
            if change:
                count = pair_counts[changed] + change
                if count:
                    pair_counts[changed] = count
                    heapq.heappush(heap, (-count, changed))
                else:
                    del pair_counts[changed]
    return merges, vocab


class BPETokenizer:
    """A byte-level BPE tokenizer: a pre-split pattern, learned merges and special tokens.

    Taught in notebooks/03_tokenization.ipynb.

    Build one with ``BPETokenizer.train(text, vocab_size)`` or ``BPETokenizer.load(path)``.
    Ids 0-255 are the single bytes, 256.. are the merges in the order they were learned,
    and special tokens (such as ``<|endoftext|>``) come last.
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        pattern: str | None = "gpt4",
        special_tokens: Mapping[str, int] | None = None,
    ) -> None:
        self.pattern = pattern
        self.pattern_regex = _pattern_regex(pattern)
        self._split = regex.compile(self.pattern_regex)
        self.vocab: list[bytes] = [bytes([b]) for b in range(256)]
        self.merges: dict[tuple[int, int], int] = {}
        if isinstance(merges, (str, bytes)) or not isinstance(merges, Iterable):
            raise TypeError(
                f"merges must be a list of (left id, right id) pairs, got {type(merges).__name__}"
                "; train a tokenizer with BPETokenizer.train(text, vocab_size)"
            )
        for number, merge in enumerate(merges):
            try:
                left, right = (operator.index(i) for i in merge)
            except (TypeError, ValueError):
                raise TypeError(
                    f"Merge {number} is {merge!r}; each merge must be a pair of integer ids."
                ) from None
            n = len(self.vocab)
            if not (0 <= left < n and 0 <= right < n):
                raise ValueError(
                    f"Merge {len(self.merges)} ({left}, {right}) uses an id that does not exist "
                    f"yet (ids 0-{n - 1} exist at that point); the merges list is corrupt."
                )
            self.merges[(left, right)] = n
            self.vocab.append(self.vocab[left] + self.vocab[right])
        self._rank = {token: i for i, token in enumerate(self.vocab)}
        if len(self._rank) != len(self.vocab):
            raise ValueError("Two merges make the same bytes; every token must be unique.")
        self.special_tokens = dict(special_tokens or {})
        for token, token_id in self.special_tokens.items():
            if not isinstance(token, str) or not token:
                raise TypeError(f"Special token {token!r} must be a non-empty str.")
            if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral):
                raise TypeError(f"Special token {token!r} has id {token_id!r}; ids are integers.")
        ids = sorted(self.special_tokens.values())
        if ids and (ids[0] < len(self.vocab) or len(set(ids)) != len(ids)):
            raise ValueError(
                f"Special token ids {ids} must be distinct and >= {len(self.vocab)} "
                "(after the byte and merge tokens)."
            )
        self._id_to_special = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._cache: dict[bytes, list[int]] = {}

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str | None = "gpt4",
        special_tokens: Iterable[str] = ("<|endoftext|>",),
    ) -> BPETokenizer:
        """Learn a tokenizer of ``vocab_size`` tokens (bytes + merges + special tokens) from text.

        Taught in notebooks/03_tokenization.ipynb.

        ``pattern`` is ``"gpt2"``, ``"gpt4"`` (the pre-split regex of those tokenizers) or
        ``None`` (no pre-split, only sensible for small texts). ``special_tokens=None`` means
        none. Raises TypeError for text that
        is not a str, a vocab_size that is not an integer or special tokens that are not
        non-empty strings, ValueError for a vocab_size too small or an unknown pattern.
        """
        check_text(text, "BPETokenizer.train")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
            raise TypeError(
                f"vocab_size must be an integer, got {vocab_size!r} ({type(vocab_size).__name__})"
            )
        if special_tokens is None:  # None: no special tokens, as an empty list says
            special_tokens = ()
        if isinstance(special_tokens, str):  # one token given on its own, not its characters
            special_tokens = [special_tokens]
        special = list(dict.fromkeys(special_tokens))
        bad = [token for token in special if not isinstance(token, str) or not token]
        if bad:
            raise TypeError(f"special_tokens must be non-empty strings, got {bad!r}")
        if vocab_size < 256 + len(special):
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must hold the 256 bytes and the "
                f"{len(special)} special tokens, so use at least {256 + len(special)}."
            )
        split = regex.compile(_pattern_regex(pattern))
        chunk_counts: dict[bytes, int] = defaultdict(int)
        for chunk in split.findall(text):
            chunk_counts[chunk.encode("utf-8")] += 1
        n_merges = vocab_size - 256 - len(special)
        merges, vocab = train_merges(chunk_counts, n_merges)
        if len(merges) < n_merges:
            warnings.warn(
                f"The text only allowed {len(merges)} merges, not {n_merges}: the vocabulary "
                f"has {len(vocab) + len(special)} tokens. Train on more text for a bigger one.",
                stacklevel=2,
            )
        return cls(merges, pattern, {s: len(vocab) + i for i, s in enumerate(special)})

    @property
    def vocab_size(self) -> int:
        """The number of token ids: bytes, merges and special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        """Encode one pre-split chunk: join the lowest-ranked adjacent pair until none is left."""
        rank = self._rank
        if chunk in rank:
            return [rank[chunk]]
        # Parts are kept as a linked list of start offsets; the heap holds (rank, start) of
        # every adjacent pair that forms a token, so the leftmost lowest rank pops first.
        n = len(chunk)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        heap = [(rank[chunk[i : i + 2]], i) for i in range(n - 1) if chunk[i : i + 2] in rank]
        heapq.heapify(heap)
        alive = [True] * n
        while heap:
            r, start = heapq.heappop(heap)
            if not alive[start] or nxt[start] >= n:
                continue
            end = nxt[nxt[start]]
            if rank.get(chunk[start:end]) != r:
                continue  # stale: one of the two parts has grown since this was pushed
            alive[nxt[start]] = False
            nxt[start] = end
            if end < n:
                prv[end] = start
                after = nxt[end]
                if chunk[start:after] in rank:
                    heapq.heappush(heap, (rank[chunk[start:after]], start))
            if prv[start] >= 0:
                before = prv[start]
                if chunk[before:end] in rank:
                    heapq.heappush(heap, (rank[chunk[before:end]], before))
        ids, start = [], 0
        while start < n:
            ids.append(rank[chunk[start : nxt[start]]])
            start = nxt[start]
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text to ids, treating special-token strings as ordinary text."""
        check_text(text, "encode_ordinary")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates become U+FFFD, as in tiktoken
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids: list[int] = []
        for piece in self._split.findall(text):
            chunk = piece.encode("utf-8")
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk)
                if len(self._cache) < 200_000:
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def encode(
        self, text: str, allowed_special: Literal["all"] | Collection[str] = frozenset()
    ) -> list[int]:
        """Encode text to ids, refusing special tokens unless ``allowed_special`` names them.

        Taught in notebooks/03_tokenization.ipynb.

        Like tiktoken: ``allowed_special="all"`` or a set of special-token strings turns
        those strings into their ids; any other special-token string in ``text`` is an error,
        because text from users should not be able to inject control tokens.
        """
        check_text(text, "encode")
        if isinstance(allowed_special, str) and allowed_special != "all":
            allowed_special = {allowed_special}
        if not isinstance(allowed_special, (str, Collection)) or not all(
            isinstance(token, str) for token in allowed_special
        ):
            raise TypeError(
                f"allowed_special must be 'all' or a collection of special-token strings, got "
                f"{allowed_special!r}"
            )
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise ValueError(
                f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                f"tokenizer; its special tokens are {sorted(self.special_tokens)}."
            )
        disallowed = self.special_tokens.keys() - allowed
        if disallowed:
            found = regex.search("|".join(map(regex.escape, sorted(disallowed))), text)
            if found:
                token = found.group()
                raise ValueError(
                    f"The text contains the special token {token!r} at position {found.start()}. "
                    f"Pass allowed_special={{{token!r}}} (or 'all') to encode it as id "
                    f"{self.special_tokens[token]}, or use encode_ordinary() to encode it as "
                    "plain text."
                )
        if not allowed:
            return self.encode_ordinary(text)
        specials = sorted(allowed, key=len, reverse=True)
        ids: list[int] = []
        for i, piece in enumerate(regex.split(f"({'|'.join(map(regex.escape, specials))})", text)):
            if i % 2:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self.encode_ordinary(piece))
        return ids

    def decode_tokens_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """Return the bytes of each token id (handy to see how a text was cut).

        ids is one sequence: a list of ints or a 1-D integer tensor (see `token_id_list`).
        """
        return self._token_bytes(token_id_list(ids, "decode_tokens_bytes"))

    def _token_bytes(self, ids: list[int]) -> list[bytes]:
        out = []
        for i in ids:
            if 0 <= i < len(self.vocab):
                out.append(self.vocab[i])
            elif i in self._id_to_special:
                out.append(self._id_to_special[i])
            else:
                raise ValueError(
                    f"Token id {i} is not in this tokenizer (ids 0-{self.vocab_size - 1}); "
                    "decode ids made by the same tokenizer."
                )
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text (bytes that are not valid UTF-8 become U+FFFD).

        ids is one sequence: a list of ints or a 1-D integer tensor (see `token_id_list`).
        """
        return b"".join(self._token_bytes(token_id_list(ids))).decode("utf-8", errors="replace")

    def to_tiktoken(self, name: str = "gptlib-bpe") -> tiktoken.Encoding:
        """Return a ``tiktoken.Encoding`` with these tokens, which encodes every text identically.

        Taught in notebooks/03_tokenization.ipynb.
        """
        import tiktoken

        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        return tiktoken.Encoding(
            name,
            pat_str=self.pattern_regex,
            mergeable_ranks=dict(self._rank),
            special_tokens=dict(self.special_tokens),
        )

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to a JSON file (pattern, merges, special tokens)."""
        state = {
            "format": _FORMAT,
            "version": 1,
            "pattern": self.pattern,
            "merges": [list(pair) for pair in self.merges],
            "special_tokens": self.special_tokens,
        }
        Path(path).write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer written by ``save``."""
        state = read_tokenizer_file(path, _FORMAT, "BPETokenizer")
        try:
            merges = [(int(left), int(right)) for left, right in state["merges"]]
            return cls(merges, state["pattern"], state["special_tokens"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is a damaged BPETokenizer file: {exc!r}") from exc

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.pattern!r}, "
            f"special_tokens={sorted(self.special_tokens)})"
        )
