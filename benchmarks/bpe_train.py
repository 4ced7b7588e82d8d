"""Time gptlib's BPE trainer against tiktoken's educational trainer, then train vocab 4096 on ~1 MB.

Run from the repository root:  python benchmarks/bpe_train.py
(options: --compare-kb 100 --compare-vocab 1024 --full-kb 1000 --full-vocab 4096)

Both trainers learn byte-level BPE with the GPT-4 pre-split pattern from the same text and
reach the same vocabulary size. ``tiktoken._educational.bpe_train`` recounts every pair of
the corpus after each merge; ``gptlib.bpe.train_merges`` counts each distinct chunk once and
updates only the pairs next to each merge. Times are CPU seconds of this process
(``time.process_time``), so other work on a shared machine does not skew them. Compression
is UTF-8 bytes per token on held-out text (the last 100,000 characters of each corpus,
never trained on).
Corpora: CPython's language reference (``python-docs``) and standard library source
(``python-stdlib``), from ``gptlib.data``.
"""

from __future__ import annotations

import argparse
import time

import tiktoken
from tiktoken._educational import bpe_train

from gptlib.bpe import GPT4_PATTERN, BPETokenizer
from gptlib.data import load_corpus
from gptlib.tokenizers import get_encoding

HELD_OUT_CHARS = 100_000


def bytes_per_token(encoding: tiktoken.Encoding, text: str) -> float:
    """UTF-8 bytes of ``text`` divided by its number of tokens (higher compresses better)."""
    return len(text.encode("utf-8")) / len(encoding.encode_ordinary(text))


def train_ours(text: str, vocab_size: int) -> tuple[float, BPETokenizer]:
    """Train gptlib's BPE (no special tokens, so the vocabulary matches tiktoken's trainer)."""
    start = time.process_time()
    tokenizer = BPETokenizer.train(text, vocab_size, pattern="gpt4", special_tokens=())
    return time.process_time() - start, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-kb", type=int, default=100, help="text for the comparison")
    parser.add_argument("--compare-vocab", type=int, default=1024)
    parser.add_argument("--full-kb", type=int, default=1000, help="text for gptlib alone")
    parser.add_argument("--full-vocab", type=int, default=4096)
    args = parser.parse_args()

    docs, code = load_corpus("python-docs"), load_corpus("python-stdlib")
    held_out = docs[-HELD_OUT_CHARS:] + code[-HELD_OUT_CHARS:]
    pool = docs[:-HELD_OUT_CHARS] + code[:-HELD_OUT_CHARS]

    text = pool[: args.compare_kb * 1000]
    n_bytes = len(text.encode("utf-8"))
    print(f"Comparison: {n_bytes:,} bytes of text, vocab {args.compare_vocab}, GPT-4 pattern")
    ours_seconds = min(train_ours(text, args.compare_vocab)[0] for _ in range(3))
    _, ours = train_ours(text, args.compare_vocab)
    start = time.process_time()
    ranks = bpe_train(text, args.compare_vocab, GPT4_PATTERN, visualise=None)
    edu_seconds = time.process_time() - start
    edu = tiktoken.Encoding("educational", pat_str=GPT4_PATTERN, mergeable_ranks=ranks,
                            special_tokens={})  # fmt: skip
    print(f"  {'trainer':<34}{'CPU s':>10}{'bytes/token (held out)':>26}")
    print(f"  {'tiktoken._educational.bpe_train':<34}{edu_seconds:>10.2f}"
          f"{bytes_per_token(edu, held_out):>26.3f}")  # fmt: skip
    print(f"  {'gptlib BPETokenizer.train (best/3)':<34}{ours_seconds:>10.2f}"
          f"{bytes_per_token(ours.to_tiktoken(), held_out):>26.3f}")  # fmt: skip
    print(f"  speed ratio: {edu_seconds / ours_seconds:.0f}x faster")

    text = pool[: args.full_kb * 1000]
    n_bytes = len(text.encode("utf-8"))
    print(f"\ngptlib alone: {n_bytes:,} bytes of text, vocab {args.full_vocab}, GPT-4 pattern")
    seconds, tokenizer = train_ours(text, args.full_vocab)
    print(f"  trained in {seconds:.2f} CPU seconds")
    rows = [(f"gptlib BPE, vocab {tokenizer.vocab_size}", tokenizer.to_tiktoken())]
    rows += [(f"{name}, vocab {get_encoding(name).n_vocab}", get_encoding(name))
             for name in ("gpt2", "cl100k_base")]  # fmt: skip
    for label, encoding in rows:
        print(f"  {label:<34} {bytes_per_token(encoding, held_out):.3f} bytes/token (held out)")


if __name__ == "__main__":
    main()
