"""Tests for gptlib.prepare (memory-mapped token files) and gptlib.run_tokenizer (a run's
tokenizer and its file)."""

import numpy as np
import pytest
import torch

from gptlib.data import get_batch
from gptlib.prepare import _pieces, encode_documents, open_tokens, prepare, text_files
from gptlib.run_tokenizer import (
    NamedEncoding,
    end_of_text_id,
    load_tokenizer,
    make_tokenizer,
    save_tokenizer,
    tokenizer_vocab_size,
)

TRICKY = (
    "def f(x):\n    return x  \n\n\n  indented\tline\r\nEnd.\nNext line ends with spaces   \n"
    "x\ny\n\n\nz 12345 678\n'quoted' don't\n" * 30
)


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2", "cl100k_base"])
def test_reading_in_pieces_gives_the_ids_of_the_whole_file(tmp_path, kind) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TRICKY, encoding="utf-8", newline="")
    tokenizer = make_tokenizer(kind, TRICKY, 300)
    pieces = list(_pieces(path, chunk_chars=37))
    assert len(pieces) > 10 and "".join(pieces) == TRICKY
    ids = [i for piece in pieces for i in tokenizer.encode(piece)]
    assert ids == tokenizer.encode(TRICKY)


def test_prepare_writes_a_memory_mapped_split_with_documents_ended(tmp_path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("Hello world. " * 50, encoding="utf-8")
    (tmp_path / "src" / "sub" / "b.py").write_text("print('hi')\n" * 50, encoding="utf-8")
    (tmp_path / "src" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" * 10)
    (tmp_path / "src" / ".hidden").write_text("secret")
    assert [p.name for p in text_files(tmp_path / "src")] == ["a.txt", "logo.png", "b.py"]
    tokens = prepare(tmp_path / "src", tmp_path / "tok", "gpt2", val_fraction=0.2)
    encoding = NamedEncoding("gpt2")
    expected = [*encoding.encode("Hello world. " * 50), encoding.eot_token,
                *encoding.encode("print('hi')\n" * 50), encoding.eot_token]  # fmt: skip
    assert tokens.train.dtype == np.uint16 and isinstance(tokens.train, np.memmap)
    assert [*tokens.train, *tokens.val] == expected
    assert len(tokens.val) == round(0.2 * len(expected))
    assert tokens.meta["files"] == 2 and tokens.vocab_size == 50257
    assert tokens.tokenizer().encode("Hello") == encoding.encode("Hello")
    again = open_tokens(tmp_path / "tok")
    assert np.array_equal(again.val, tokens.val)
    with pytest.raises(FileExistsError, match="already holds prepared tokens"):
        prepare(tmp_path / "src", tmp_path / "tok")


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("你好，世界。" * 40, encoding="utf-8")
    tokens = prepare(tmp_path / "a.txt", tmp_path / "tok", "cl100k_base")
    assert tokens.train.dtype == np.uint32 and tokens.vocab_size == 100277
    char = prepare(tmp_path / "a.txt", tmp_path / "char", "char")
    assert char.tokenizer().decode(char.train[:6].tolist()) == "你好，世界。"


def test_batches_from_a_memory_map_equal_those_from_the_tensor(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("abcdefghij" * 100, encoding="utf-8")
    tokens = prepare(tmp_path / "a.txt", tmp_path / "tok", "char")
    tensor = torch.from_numpy(np.asarray(tokens.train).astype(np.int64))
    for data in (tokens.train, tensor):
        x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(3))
        assert x.dtype == torch.long and torch.equal(y[:, :-1], x[:, 1:])
    a = get_batch(tokens.train, 4, 8, torch.Generator().manual_seed(3))
    b = get_batch(tensor, 4, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_damaged_or_unreadable_inputs_get_clear_errors(tmp_path) -> None:
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 10)
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        prepare(tmp_path / "latin1.txt", tmp_path / "x", "char")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(tmp_path / "nothing", tmp_path / "y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        prepare(tmp_path / "empty", tmp_path / "z")
    (tmp_path / "a.txt").write_text("abc" * 100, encoding="utf-8")
    prepare(tmp_path / "a.txt", tmp_path / "tok", "char")
    with open(tmp_path / "tok" / "tokens.bin", "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(ValueError, match="truncated or from another run"):
        open_tokens(tmp_path / "tok")
    with pytest.raises(ValueError, match="val_fraction"):
        prepare(tmp_path / "a.txt", tmp_path / "w", val_fraction=1.0)


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_a_runs_tokenizer_saves_and_loads_back(tmp_path, kind) -> None:
    tokenizer = make_tokenizer(kind, "hello there, general kenobi " * 20, 270)
    save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert type(loaded) is type(tokenizer)
    assert loaded.encode("hello there") == tokenizer.encode("hello there")
    assert tokenizer_vocab_size(loaded) == tokenizer_vocab_size(tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temporary file left
    assert (end_of_text_id(tokenizer) is None) == (kind == "char")


def test_encode_documents_ends_each_document(tmp_path) -> None:
    char = make_tokenizer("char", "ab\n")
    ids = np.concatenate(list(encode_documents(char, [["ab"], ["ba"]])))
    assert char.decode(ids.tolist()) == "ab\n\nba\n\n"


def test_what_is_no_tokenizer_of_a_run_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'words'"):
        make_tokenizer("words", "text")
    with pytest.raises(TypeError, match="cannot save a str"):
        save_tokenizer("abc", tmp_path / "t.json")
    (tmp_path / "t.json").write_text('{"format": "sentencepiece"}')
    with pytest.raises(ValueError, match="unknown tokenizer format 'sentencepiece'"):
        load_tokenizer(tmp_path / "t.json")
    with pytest.raises(TypeError, match="no vocab_size"):
        tokenizer_vocab_size(object())


def test_bad_settings_a_late_decoding_error_and_a_damaged_tokens_json_are_named(tmp_path):
    import json

    (tmp_path / "a.txt").write_text("hello world\n" * 100, encoding="utf-8")
    for name, value in (("bpe_train_chars", 0), ("bpe_train_chars", -5), ("vocab_size", 0)):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            prepare(tmp_path / "a.txt", tmp_path / "x", "bpe", **{name: value})  # was accepted
    with pytest.raises(FileExistsError, match=r"a\.txt is a file; --out must be a folder"):
        prepare(tmp_path / "a.txt", tmp_path / "a.txt", "char")
    # invalid UTF-8 after the first 8 KiB: the file is named, and no token file is left
    (tmp_path / "late.txt").write_bytes(b"a" * 9000 + b"\xff" + b"b" * 100)
    chars = make_tokenizer("char", "ab\n")
    with pytest.raises(ValueError, match=r"late\.txt is not UTF-8 text past its first 8 KiB"):
        prepare(tmp_path / "late.txt", tmp_path / "late", chars)
    assert list((tmp_path / "late").iterdir()) == []
    prepare(tmp_path / "a.txt", tmp_path / "tok", "char")
    meta = json.loads((tmp_path / "tok" / "tokens.json").read_text())
    for key, value in (("dtype", None), ("n_train", 10**9), ("n_tokens", "12")):
        (tmp_path / "tok" / "tokens.json").write_text(json.dumps({**meta, key: value}))
        with pytest.raises(ValueError, match=r"tokens\.json is damaged: it needs dtype"):
            open_tokens(tmp_path / "tok")  # a KeyError traceback, or an empty validation part
