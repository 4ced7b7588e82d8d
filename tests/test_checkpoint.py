"""Checkpoint folders: the shipped ones agree with data/README.md, and no kill loses one.

The figures of data/checkpoints/char_python_docs are parsed from the README, so the
documentation cannot drift from the files. The kill tests stop a training run at every moment
of a save (in this process) and kill a real `python -m gptlib.train` with SIGKILL at the
dangerous moments (through gptlib.checkpoint's crash points), then check that the folder holds
the previous checkpoint or the new one, whole, and that resuming reaches the weights of a run
that was never killed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import (
    CLI_TINY,
    ROOT,
    assert_same_weights,
    saved_weights,
    tiny_config,
    tiny_model,
    weights,
)

from gptlib import GPT, GPTConfig
from gptlib import checkpoint as ckpt
from gptlib.data import load_corpus, split
from gptlib.finetune import SequenceClassifier
from gptlib.train import evaluate, load_checkpoint, train
from gptlib.train import main as train_main

README = ROOT / "data" / "README.md"
CORPUS = {
    "char_python_docs": "python-docs",
    "bpe_code_tasks": "code-tasks",
    "bpe_stories": "stories",
    "bpe_code_tasks_from_stdlib": "code-tasks",
}  # checkpoint: corpus
CHECKPOINTS = list(CORPUS)


def _readme_section(checkpoint: str, folder: str = "checkpoints") -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {folder}/{checkpoint}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"data/README.md has no '## {folder}/{checkpoint}' section"
    return match.group(0)


def _figure(name: str, checkpoint: str, folder: str = "checkpoints") -> str:
    section = _readme_section(checkpoint, folder)
    match = re.search(rf"\*\*{name}:\*\*\s*`?([^`\n]+)`?", section)
    assert match, f"data/README.md's section on {checkpoint} does not state the {name}"
    return match.group(1).strip()


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_checkpoint_folder_is_small_and_complete(checkpoint: str) -> None:
    folder = ROOT / "data" / "checkpoints" / checkpoint
    names = {path.name for path in folder.iterdir()} - {"checkpoint.json"}  # newer runs' manifest
    expected = {"config.json", "model.safetensors", "tokenizer.json", "train_config.json",
                "history.json", "command.json"}  # fmt: skip
    assert names == expected, f"unexpected files {names ^ expected}"
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert size < 5_000_000, f"the checkpoint is {size / 1e6:.1f} MB; keep it to a few MB"


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_readme_gives_the_command_steps_and_loss_of_the_files(checkpoint: str) -> None:
    folder = ROOT / "data" / "checkpoints" / checkpoint
    command = json.loads((folder / "command.json").read_text())["command"]
    assert _figure("Command", checkpoint) == command
    history = json.loads((folder / "history.json").read_text())
    assert int(_figure("Steps", checkpoint).split()[0].replace(",", "")) == history["steps"][-1]
    assert float(_figure("Final validation loss", checkpoint).split()[0]) == pytest.approx(
        history["val_loss"][-1], abs=5e-4
    )


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_validation_loss_matches_the_readme(checkpoint: str) -> None:
    folder = ROOT / "data" / "checkpoints" / checkpoint
    model = GPT.load(folder)
    _, tokenizer, _ = load_checkpoint(folder)
    run = json.loads((folder / "train_config.json").read_text())
    text = load_corpus(CORPUS[checkpoint])
    try:
        ids = torch.tensor(tokenizer.encode(text))
    except ValueError as err:
        pytest.skip(f"this Python's docs ({sys.version.split()[0]}) are not the 3.11 ones: {err}")
    _, val_ids = split(ids, val_fraction=0.1)
    # The same fixed batches that training evaluated on: seed + 1, eval_batches of batch_size.
    loss = evaluate(model, val_ids, run["batch_size"], model.config.block_size,
                    n_batches=run["eval_batches"], seed=run["seed"] + 1)  # fmt: skip
    expected = float(_figure("Final validation loss", checkpoint).split()[0])
    assert loss == pytest.approx(expected, abs=0.02)


# ------------------------------------------------- training records without weights (chapter 11)
RUNS = ROOT / "data" / "training_runs"
RECORDS = ["bpe_stdlib"]  # the pre-training run of checkpoints/bpe_code_tasks_from_stdlib


@pytest.mark.parametrize("run", RECORDS)
def test_training_records_are_small_and_match_the_readme(run: str) -> None:
    folder = RUNS / run
    names = {path.name for path in folder.iterdir()}
    expected = {"config.json", "tokenizer.json", "train_config.json", "history.json",
                "command.json"}  # fmt: skip
    assert names == expected, f"unexpected files {names ^ expected} (the weights do not ship)"
    assert sum(path.stat().st_size for path in folder.iterdir()) < 300_000
    command = json.loads((folder / "command.json").read_text())["command"]
    assert _figure("Command", run, "training_runs") == command
    history = json.loads((folder / "history.json").read_text())
    steps = int(_figure("Steps", run, "training_runs").split()[0].replace(",", ""))
    assert steps == history["steps"][-1] == len(history["train_loss"])
    assert float(_figure("Final validation loss", run, "training_runs").split()[0]) == (
        pytest.approx(history["val_loss"][-1], abs=5e-4)
    )


def test_the_pretraining_comparison_changes_only_the_starting_weights() -> None:
    """notebooks/11_codex.ipynb compares the fine-tuned run with the code model trained from
    scratch batch for batch: same architecture, tokenizer, data, seed and schedule; only the
    starting weights differ (and how often it evaluated)."""
    scratch = ROOT / "data" / "checkpoints" / "bpe_code_tasks"
    finetuned = ROOT / "data" / "checkpoints" / "bpe_code_tasks_from_stdlib"
    pretrained = RUNS / "bpe_stdlib"

    def read(folder: Path, name: str) -> dict:
        return json.loads((folder / name).read_text())

    for folder in (pretrained, finetuned):
        assert GPTConfig.from_dict(read(folder, "config.json")) == GPTConfig.from_dict(
            read(scratch, "config.json")
        )
        assert read(folder, "tokenizer.json") == read(scratch, "tokenizer.json")
    schedule = ("max_steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay",
                "betas", "grad_clip", "eval_batches", "repeat_fraction", "seed")  # fmt: skip
    tuned, base = read(finetuned, "train_config.json"), read(scratch, "train_config.json")
    assert {k: tuned[k] for k in schedule} == {k: base[k] for k in schedule}
    tuned_command = read(finetuned, "command.json")
    assert tuned_command["corpus"] == "code-tasks"
    pretrain_argv = read(pretrained, "command.json")["argv"]
    assert tuned_command["init_from"] == pretrain_argv[pretrain_argv.index("--out") + 1]
    assert pretrain_argv[pretrain_argv.index("--tokens") + 1] == "runs/stdlib_tokens"


# ---------------------------------------------------------------------- kills during a save
@pytest.fixture(scope="module")
def stories() -> tuple:
    from gptlib.tokenizers import CharTokenizer

    text = load_corpus("stories", max_chars=8_000)
    tokenizer = CharTokenizer.from_text(text)
    return (tokenizer, *split(torch.tensor(tokenizer.encode(text))))


KILL_RUN = dict(max_steps=4, batch_size=4, warmup_steps=0, eval_interval=2, eval_batches=1,
                checkpoint_interval=2)  # fmt: skip


def test_a_kill_at_any_moment_of_a_save_leaves_the_old_or_the_new_checkpoint(
    stories, tmp_path, monkeypatch
) -> None:
    """At every crash point of two saves, copy the folder: the copy is what kill -9 at that
    moment leaves (the real kills below show it). Each copy, repaired as the next start repairs
    it, must hold a whole checkpoint of the previous or the new step, and resume exactly."""
    tokenizer, train_ids, val_ids = stories
    config = tiny_config(**KILL_RUN)
    out = tmp_path / "run"
    labels: list[str] = []

    def snapshot(label: str) -> None:
        shutil.copytree(out, tmp_path / f"kill{len(labels)}")
        labels.append(label)

    monkeypatch.setattr(ckpt, "crash_point", snapshot)
    straight = tiny_model(tokenizer.vocab_size, n_layer=1, n_embd=16)
    expected = train(straight, train_ids, val_ids, config, out, progress=False,
                     tokenizer=tokenizer)  # fmt: skip
    monkeypatch.undo()
    per_save = len(labels) // 2
    assert labels[:per_save] == labels[per_save:] and "committed" in labels
    manifests = {}
    for k, label in enumerate(labels):
        folder = shutil.copytree(tmp_path / f"kill{k}", tmp_path / f"repaired{k}")
        ckpt.recover(folder)
        step = 2 * (k // per_save + (k % per_save >= labels.index("committed")))
        if step == 0:
            assert not ckpt.has_checkpoint(folder), label
            assert {p.name for p in folder.iterdir()} <= {ckpt.LOCK_FILE}, label
            continue
        assert ckpt.verify(folder)["step"] == step, label
        assert not [
            p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"
        ]
        manifest = (folder / "checkpoint.json").read_text()
        assert manifests.setdefault(step, manifest) == manifest, label  # the same files
    # So every kill leaves one of three folders (none, step 2, step 4); each resumes exactly.
    for k in (0, labels.index("committed"), per_save, len(labels) - 1):
        model = tiny_model(tokenizer.vocab_size, n_layer=1, n_embd=16)
        history = train(model, train_ids, val_ids, config, tmp_path / f"kill{k}", resume=True,
                        progress=False, tokenizer=tokenizer)  # fmt: skip
        assert history.train_loss == expected.train_loss, labels[k]
        assert_same_weights(weights(straight), weights(model))
        assert not [p.name for p in (tmp_path / f"kill{k}").iterdir() if p.name.startswith(".")]


def _cli(out: Path) -> list[str]:
    return ["--out", str(out), *CLI_TINY, "--max-steps", "4", "--warmup-steps", "0",
            "--eval-interval", "2", "--checkpoint-interval", "2", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def crash_points(tmp_path_factory) -> tuple[list[str], dict]:
    """The crash points of the command below, and the weights of its run never killed."""
    labels: list[str] = []
    real = ckpt.crash_point
    ckpt.crash_point = labels.append
    threads = torch.get_num_threads()
    try:
        out = tmp_path_factory.mktemp("straight") / "run"
        train_main(_cli(out))
    finally:
        ckpt.crash_point = real
        torch.set_num_threads(threads)
    return labels, saved_weights(out)


@pytest.mark.parametrize(
    ("save", "label", "message"),
    [
        (0, "staged history.json", "training starts at step 0"),  # the very first checkpoint
        (1, "moved model.safetensors", "finished saving the checkpoint of step 4"),
    ],
)
def test_kill_9_of_a_real_training_process_during_a_save(
    crash_points, tmp_path, capfd, save, label, message
) -> None:
    labels, expected = crash_points
    per_save = len(labels) // 2
    point = save * per_save + labels[:per_save].index(label) + 1
    out = tmp_path / "run"
    env = {**os.environ, ckpt.CRASH_ENV: str(point), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "gptlib.train", *_cli(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert f"killed at crash point {point}: {label}" in result.stdout
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")  # as a kill leaves them
    threads = torch.get_num_threads()
    try:
        capfd.readouterr()
        train_main([*_cli(out), "--resume"])
    finally:
        torch.set_num_threads(threads)
    assert message in capfd.readouterr().err
    assert_same_weights(expected, saved_weights(out))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_fresh_start_accepts_a_folder_whose_first_save_was_killed(stories, tmp_path, capfd):
    tokenizer, train_ids, val_ids = stories
    out = tmp_path / "run"
    (out / ckpt.STAGING_DIR).mkdir(parents=True)
    (out / ckpt.STAGING_DIR / "model.safetensors").write_bytes(b"half")
    train(tiny_model(tokenizer.vocab_size, n_layer=1, n_embd=16), train_ids, val_ids,
          tiny_config(**KILL_RUN), out, progress=False)  # fmt: skip
    assert "removed an unfinished checkpoint" in capfd.readouterr().err
    assert ckpt.verify(out)["step"] == 4


# ---------------------------------------------------------------------- the alignment record
INSTRUCT = ROOT / "data" / "checkpoints" / "instruct_stories"  # by python -m gptlib.alignment


def instruct_table(results: dict) -> str:
    """The per-seed table of data/README.md, made from results.json."""
    lines = [
        "| seed | base | SFT | RM accuracy (held out) | best of 8 | PPO β = 0 | PPO β = 0.1 | DPO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, run in results["seeds"].items():
        cells = [seed, f"{run['eval']['base']['labeler']:.3f}", f"{run['eval']['sft']['labeler']:.3f}",
                 f"{run['rm']['accuracy_test']:.3f}", f"{run['best_of_n']['8']:.3f}"]  # fmt: skip
        for result in (run["ppo"]["0"], run["ppo"]["0.1"], run["dpo"]):
            e = result["eval"]
            cells.append(f"{e['labeler']:.3f} (KL {e['kl']:.1f}, RM {e['rm_score']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_instruct_checkpoint_is_small_and_matches_the_readme() -> None:
    results = json.loads((INSTRUCT / "results.json").read_text())
    assert _figure("Command", "instruct_stories") == results["command"]
    assert instruct_table(results) in _readme_section("instruct_stories")
    size = sum(path.stat().st_size for path in INSTRUCT.rglob("*") if path.is_file())
    assert size < 5_000_000, f"the checkpoint is {size / 1e6:.1f} MB; keep it to a few MB"
    base = GPT.load(ROOT / "data" / "checkpoints" / "bpe_stories").config
    for seed in results["settings"]["save_models"]:
        folder = INSTRUCT / f"seed{seed}"
        for name in (
            "sft",
            "dpo",
            *(f"ppo_beta{beta}" for beta in results["seeds"][str(seed)]["ppo"]),
        ):
            assert GPT.load(folder / name).config == base
        assert SequenceClassifier.load(folder / "reward_model").head.out_features == 1


def test_a_damaged_manifest_or_checkpoint_file_is_named_not_a_key_error(tmp_path):
    out = tmp_path / "run"
    train_main(["--out", str(out), "--max-steps", "2", *CLI_TINY])
    manifest = json.loads((out / ckpt.MANIFEST_FILE).read_text())
    del manifest["files"]
    (out / ckpt.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"checkpoint\.json is not a gptlib checkpoint manifest"):
        load_checkpoint(out)
    (out / ckpt.MANIFEST_FILE).unlink()  # a checkpoint from before manifests
    (out / ckpt.TRAIN_CONFIG_FILE).write_text("[]")
    with pytest.raises(ValueError, match=r"train_config\.json holds a JSON list, not the object"):
        ckpt.read_json(out / ckpt.TRAIN_CONFIG_FILE)
    # a committed staging folder whose manifest was damaged: named, with what to do
    (out / ckpt.STAGING_DIR).mkdir()
    (out / ckpt.STAGING_DIR / ckpt.MANIFEST_FILE).write_text('{"step": 3}')
    with pytest.raises(ValueError, match=r"damaged: delete .*\.staging to keep the previous"):
        ckpt.recover(out)
