"""The checkpoints that `python -m gptlib.train` made in data/checkpoints agree with data/README.md.

The figures are parsed from the README, so the documentation cannot drift from the files.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from gptlib import GPT
from gptlib.data import load_corpus, split
from gptlib.finetune import SequenceClassifier
from gptlib.train import evaluate, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "data" / "checkpoints"
README = ROOT / "data" / "README.md"
TRAINED = ["char_python_docs", "bpe_stories"]  # folders written by python -m gptlib.train


def _readme_section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## checkpoints/{name} .*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"data/README.md has no '## checkpoints/{name}' section"
    return match.group(0)


def _figure(checkpoint: str, name: str) -> str:
    match = re.search(rf"\*\*{name}:\*\*\s*`?([^`\n]+)`?", _readme_section(checkpoint))
    assert match, f"data/README.md's section on {checkpoint} does not state the {name}"
    return match.group(1).strip()


@pytest.mark.parametrize("name", TRAINED)
def test_checkpoint_folder_is_small_and_complete(name: str) -> None:
    folder = CHECKPOINTS / name
    names = {path.name for path in folder.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "train_config.json",
                "history.json", "command.json"}  # fmt: skip
    assert names == expected, f"unexpected files {names ^ expected}"
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert size < 5_000_000, f"the checkpoint is {size / 1e6:.1f} MB; keep it to a few MB"


@pytest.mark.parametrize("name", TRAINED)
def test_readme_gives_the_command_steps_and_loss_of_the_files(name: str) -> None:
    folder = CHECKPOINTS / name
    command = json.loads((folder / "command.json").read_text())["command"]
    assert _figure(name, "Command") == command
    history = json.loads((folder / "history.json").read_text())
    assert int(_figure(name, "Steps").split()[0].replace(",", "")) == history["steps"][-1]
    assert float(_figure(name, "Final validation loss").split()[0]) == pytest.approx(
        history["val_loss"][-1], abs=5e-4
    )


@pytest.mark.parametrize("name", TRAINED)
def test_validation_loss_matches_the_readme(name: str) -> None:
    folder = CHECKPOINTS / name
    model = GPT.load(folder)
    _, tokenizer, _ = load_checkpoint(folder)
    run = json.loads((folder / "train_config.json").read_text())
    text = load_corpus(json.loads((folder / "command.json").read_text())["corpus"])
    try:
        ids = torch.tensor(tokenizer.encode(text))
    except ValueError as err:
        pytest.skip(f"this Python's docs ({sys.version.split()[0]}) are not the 3.11 ones: {err}")
    _, val_ids = split(ids, val_fraction=0.1)
    # The same fixed batches that training evaluated on: seed + 1, eval_batches of batch_size.
    loss = evaluate(model, val_ids, run["batch_size"], model.config.block_size,
                    n_batches=run["eval_batches"], seed=run["seed"] + 1)  # fmt: skip
    assert loss == pytest.approx(float(_figure(name, "Final validation loss").split()[0]), abs=0.02)


INSTRUCT = CHECKPOINTS / "instruct_stories"  # written by python -m gptlib.alignment


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
    assert _figure("instruct_stories", "Command") == results["command"]
    assert instruct_table(results) in _readme_section("instruct_stories")
    size = sum(path.stat().st_size for path in INSTRUCT.rglob("*") if path.is_file())
    assert size < 5_000_000, f"the checkpoint is {size / 1e6:.1f} MB; keep it to a few MB"
    for seed in results["settings"]["save_models"]:
        folder = INSTRUCT / f"seed{seed}"
        for name in (
            "sft",
            "dpo",
            *(f"ppo_beta{beta}" for beta in results["seeds"][str(seed)]["ppo"]),
        ):
            assert GPT.load(folder / name).config == GPT.load(CHECKPOINTS / "bpe_stories").config
        assert SequenceClassifier.load(folder / "reward_model").head.out_features == 1
