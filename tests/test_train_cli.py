"""Tests for the command lines `python -m gptlib.train`, `python -m gptlib.prepare` (through
training on its output) and `python -m gptlib.sample`."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import CLI_TINY, ROOT, assert_same_weights, saved_weights

from gptlib import GPTConfig
from gptlib.checkpoint import STATE_FILE, FolderLock
from gptlib.run_tokenizer import load_tokenizer
from gptlib.sample import main as sample_main
from gptlib.train import load_checkpoint, main

CHECKPOINT_FILES = {"config.json", "model.safetensors", "tokenizer.json", "train_config.json",
                    "history.json", STATE_FILE, "checkpoint.json", "command.json"}  # fmt: skip


def cli_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run the command expecting it to fail with `code`; return its one-line message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_cli_trains_resumes_and_extends(tmp_path) -> None:
    out = str(tmp_path / "cli")
    history = main(["--out", out, "--max-steps", "6", *CLI_TINY])
    assert history.steps[-1] == 6
    assert {p.name for p in Path(out).iterdir()} == CHECKPOINT_FILES
    assert "--max-steps 6" in json.loads((Path(out) / "command.json").read_text())["command"]
    history = main(["--out", out, "--max-steps", "9", "--resume", *CLI_TINY])
    assert history.steps == list(range(1, 10))
    main(["--out", out, "--max-steps", "9", "--resume", "--final-weights-only", *CLI_TINY])
    assert not (Path(out) / STATE_FILE).exists()
    model, tokenizer, _ = load_checkpoint(out)  # the manifest no longer lists the state
    assert model.config.vocab_size == tokenizer.vocab_size


def test_resume_needs_only_the_folder_and_what_changes(tmp_path, capsys) -> None:
    out = str(tmp_path / "run")
    main(["--out", out, "--max-steps", "4", *CLI_TINY, "--n-layer", "2", "--dropout", "0.1"])
    history = main(["--out", out, "--resume", "--max-steps", "7"])  # the rest as recorded
    assert history.steps == list(range(1, 8))
    model, _, _ = load_checkpoint(out)
    assert (model.config.n_layer, model.config.dropout) == (2, 0.1)
    err = cli_error(capsys, ["--out", out, "--resume", "--max-steps", "8", "--n-layer", "3"])
    assert "different model (n_layer: checkpoint 2, now 3)" in err
    err = cli_error(capsys, ["--out", out, "--resume", "--max-steps", "8", "--tokenizer", "bpe"])
    assert "--tokenizer cannot change the tokenizer" in err
    main(["--out", out, "--resume", "--final-weights-only"])
    err = cli_error(capsys, ["--out", out, "--resume", "--max-steps", "9"])
    assert "cannot be resumed" in err and "--init-from" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corpus", "wikipedia"], "Known corpora: 'python-docs', 'python-stdlib', 'stories'"),
        (["--resume"], "holds no checkpoint to resume"),
        (["--n-head", "3"], "not divisible by n_head"),
        (["--preset", "mixtral", "--n-head", "2"], "also pass n_kv_head"),
        (["--position", "wavy"], "position='wavy' is unknown"),
        (["--text", "missing.txt"], "missing.txt does not exist"),
        (["--tokens", "nowhere"], "make it with python -m gptlib.prepare"),
        (["--tokens", "nowhere", "--text", "x.txt"], "give one of --corpus, --text and --tokens"),
        (["--threads", "-1"], "--threads must be a positive integer, got -1"),
    ],
)
def test_cli_bad_input_gives_a_clear_error(tmp_path, capsys, args, message) -> None:
    tiny = CLI_TINY[4:] if "--text" in args or "--tokens" in args else CLI_TINY  # no --corpus
    assert message in cli_error(capsys, ["--out", str(tmp_path / "x"), "--max-steps", "2",
                                         *tiny, *args])  # fmt: skip


def test_cli_refuses_an_out_dir_holding_another_checkpoint(tmp_path, capsys) -> None:
    out = str(tmp_path / "cli")
    main(["--out", out, "--max-steps", "3", *CLI_TINY])
    for extra, message in ([], "already holds a checkpoint"), (["--resume"], "different model"):
        err = cli_error(capsys, ["--out", out, "--max-steps", "3", *extra, *CLI_TINY,
                                 "--n-layer", "2"])  # fmt: skip
        assert message in err


def test_faults_end_with_one_line_and_the_right_exit_status(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("")
    err = cli_error(capsys, ["--out", str(tmp_path / "file" / "x"), "--max-steps", "2", *CLI_TINY])
    assert "cannot write to the output folder" in err and err.count("\n") == 1
    with FolderLock(tmp_path / "busy"):
        err = cli_error(capsys, ["--out", str(tmp_path / "busy"), "--max-steps", "2", *CLI_TINY])
    assert "in use by another training run" in err
    argv = ["--out", str(tmp_path / "nan"), "--max-steps", "20", *CLI_TINY, "--lr", "1e6",
            "--grad-clip", "0", "--warmup-steps", "0", "--eval-interval", "1"]  # fmt: skip
    err = cli_error(capsys, argv, code=1)
    assert "training diverged" in err and "Lower the learning rate" in err


def test_help_shows_every_default_and_every_model_field(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--n-layer", "4"), ("--max-steps", "1000"), ("--lr", "0.001"),
                          ("--corpus", "python-docs"), ("--device", "auto")):  # fmt: skip
        assert f"{flag} " in text and f"(default: {default})" in text
    for field in dataclasses.fields(GPTConfig):
        if field.name not in ("vocab_size", "extra"):
            assert "--" + field.name.replace("_", "-") in text, field.name


def test_every_switch_of_a_preset_is_reachable(tmp_path) -> None:
    out = tmp_path / "moe"
    main(["--out", str(out), "--max-steps", "2", *CLI_TINY, "--preset", "mixtral",
          "--n-kv-head", "1", "--n-experts", "2", "--d-ff", "24", "--attention-pattern", "local",
          "dense", "--window-size", "4", "--no-tie-embeddings", "--rotary-base", "500"])  # fmt: skip
    config = load_checkpoint(out)[0].config
    assert (config.n_head, config.n_kv_head, config.n_experts, config.d_ff) == (2, 1, 2, 24)
    assert config.attention_pattern == ("local", "dense") and config.window_size == 4
    assert (config.tie_embeddings, config.rotary_base, config.mlp) == (False, 500.0, "moe")


def test_a_short_run_with_the_default_warmup_works(tmp_path) -> None:
    at = CLI_TINY.index("--warmup-steps")
    main(["--out", str(tmp_path / "x"), "--max-steps", "9", *CLI_TINY[:at], *CLI_TINY[at + 2 :]])
    saved = json.loads((tmp_path / "x" / "train_config.json").read_text())
    assert saved["warmup_steps"] == 0  # min(100, 9 // 10)


def test_training_on_your_own_text_file_or_folder(tmp_path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("The fox ran.\n" * 200, encoding="utf-8")
    (tmp_path / "notes" / "b.md").write_text("A cat sat.\n" * 200, encoding="utf-8")
    (tmp_path / "notes" / "picture.bin").write_bytes(bytes(range(256)) * 4)  # skipped
    tiny = CLI_TINY[2:]  # without --corpus
    for source, tokenizer in ((tmp_path / "notes" / "a.txt", "char"), (tmp_path / "notes", "bpe")):
        out = tmp_path / f"run_{tokenizer}"
        main(["--out", str(out), "--max-steps", "2", *tiny, "--text", str(source),
              "--tokenizer", tokenizer, "--vocab-size", "270"])  # fmt: skip
        model, saved_tokenizer, _ = load_checkpoint(out)
        assert saved_tokenizer.decode(saved_tokenizer.encode("The fox")) == "The fox"
        assert json.loads((out / "command.json").read_text())["text"] == str(source)
    assert set(load_checkpoint(tmp_path / "run_char")[1].chars) == set("The fox ran.\n")


def test_prepare_then_train_on_the_memory_mapped_tokens(tmp_path, capsys) -> None:
    from gptlib.prepare import main as prepare_main

    prepare_main(["--corpus", "stories", "--out", str(tmp_path / "tok"), "--tokenizer", "char"])
    assert "tokens (uint16)" in capsys.readouterr().out
    tiny = CLI_TINY[4:]  # without --corpus and --max-chars
    history = main(["--out", str(tmp_path / "run"), "--max-steps", "3", *tiny,
                    "--tokens", str(tmp_path / "tok")])  # fmt: skip
    assert history.steps == [1, 2, 3]
    tokenizer = load_checkpoint(tmp_path / "run")[1]
    assert tokenizer.chars == load_tokenizer(tmp_path / "tok" / "tokenizer.json").chars
    err = cli_error(capsys, ["--out", str(tmp_path / "r2"), "--max-steps", "3", *tiny,
                             "--tokens", str(tmp_path / "tok"), "--max-chars", "10"])  # fmt: skip
    assert "--max-chars applies to --corpus and --text" in err


def test_init_from_fine_tunes_with_the_same_tokenizer_and_architecture(tmp_path, capsys) -> None:
    base = tmp_path / "base"
    main(["--out", str(base), "--max-steps", "3", *CLI_TINY])
    tuned = tmp_path / "tuned"
    # One step at a learning rate too small to move a weight: the weights are the base's.
    once = [*CLI_TINY, "--max-steps", "1", "--warmup-steps", "0", "--lr", "1e-12"]
    main(["--out", str(tuned), *once, "--init-from", str(base), "--dropout", "0.1"])
    assert_same_weights(saved_weights(base), saved_weights(tuned), rtol=0, atol=1e-9)
    assert (tuned / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert load_checkpoint(tuned)[0].config.dropout == 0.1
    assert json.loads((tuned / "command.json").read_text())["init_from"] == str(base)
    err = cli_error(capsys, ["--out", str(tmp_path / "bad"), *once, "--init-from", str(base),
                             "--n-layer", "2"])  # fmt: skip
    assert "another architecture than the flags ask for: n_layer=2 (it has 1)" in err


def test_sample_prints_reproducible_continuations(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    main(["--out", str(out), "--max-steps", "3", *CLI_TINY])
    capsys.readouterr()
    args = ["--checkpoint", str(out), "--prompt", "Mila", "--max-new-tokens", "12"]
    first = sample_main([*args, "--seed", "1", "--top-k", "5", "--top-p", "0.9"])
    assert capsys.readouterr().out == first[0] + "\n"
    assert first[0].startswith("Mila") and len(first[0]) == 4 + 12
    assert sample_main([*args, "--seed", "1", "--top-k", "5", "--top-p", "0.9"]) == first
    many = sample_main([*args, "--seed", "2", "--num-samples", "3", "--temperature", "1.5"])
    assert len(many) == 3 and len(set(many)) > 1
    assert "----- sample 3 -----" in capsys.readouterr().out
    greedy = sample_main([*args, "--temperature", "0", "--seed", "5"])
    assert greedy == sample_main([*args, "--temperature", "0", "--seed", "6"])
    for bad, message in ((["--prompt", "€"], "'€'"), (["--temperature", "-1"], "temperature")):
        with pytest.raises(SystemExit) as exit_info:
            sample_main([*args, *bad])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sample_main(["--checkpoint", str(tmp_path / "none")])
    assert "no checkpoint folder" in capsys.readouterr().err


def test_python_dash_m_gptlib_train_and_sample_run(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gptlib.train", "--out", str(tmp_path / "m"), "--max-steps", "3",
         *CLI_TINY[:-1], "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final val loss" in result.stdout
    assert "step 3: train loss" in result.stdout + result.stderr
    assert "tokens/s" in result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gptlib.sample", "--checkpoint", str(tmp_path / "m"), "--prompt",
         "Ada", "--max-new-tokens", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("Ada"), result.stderr[-2000:]


def test_torch_threads_flag_is_applied(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        main(["--out", str(tmp_path / "t"), *CLI_TINY, "--max-steps", "1", "--warmup-steps", "0",
              "--threads", "1"])  # fmt: skip
        manifest = json.loads((tmp_path / "t" / "checkpoint.json").read_text())
        assert manifest["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(threads)


def test_flags_that_tokens_ignore_and_a_damaged_record_are_named(tmp_path, capsys) -> None:
    from gptlib.prepare import prepare

    (tmp_path / "a.txt").write_text("hello world\n" * 300, encoding="utf-8")
    prepare(tmp_path / "a.txt", tmp_path / "tok", "char")
    tiny = CLI_TINY[4:]  # no --corpus
    for flag in (["--tokenizer", "bpe"], ["--val-fraction", "0.5"], ["--max-chars", "10"]):
        err = cli_error(capsys, ["--out", str(tmp_path / "x"), "--max-steps", "2", *tiny,
                                 "--tokens", str(tmp_path / "tok"), *flag])  # fmt: skip
        assert f"{flag[0]} applies to --corpus and --text, not to --tokens" in err
    out = tmp_path / "run"
    main(["--out", str(out), "--max-steps", "2", *CLI_TINY])
    for record, message in (
        ({"x": 1}, r'records no command line \("argv"'),  # a KeyError traceback before
        ({"argv": ["--bogus"]}, "recorded in .*command.json does not parse: the following"),
        ([], "command.json holds a JSON list, not the object"),
    ):
        (out / "command.json").write_text(json.dumps(record))
        err = cli_error(capsys, ["--out", str(out), "--resume", "--max-steps", "4"])
        assert re.search(message, err), err
