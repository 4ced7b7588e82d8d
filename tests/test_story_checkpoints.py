"""The story checkpoints that chapters 07, 08 and 09 read agree with data/README.md.

Each folder under data/checkpoints that this file lists has a section in data/README.md giving
the command that made it, its steps and its final validation loss; the figures are parsed from
the README and compared with the files, and the validation loss is recomputed from the weights
on the generated story corpus (identical on every Python), so the documentation cannot drift.
"""

import json
import re
from pathlib import Path

import pytest
import torch

from gptlib.data import load_corpus, split
from gptlib.train import evaluate, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "data" / "README.md"
CHECKPOINTS = {  # folder: the chapters that read it
    "gpt1_stories": ("07_gpt1.ipynb",),
    "char_stories": ("08_gpt2.ipynb", "09_gpt3.ipynb"),
}
FILES = {"checkpoint.json", "command.json", "config.json", "history.json", "model.safetensors",
         "tokenizer.json", "train_config.json"}  # fmt: skip


def _section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## checkpoints/{name}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"data/README.md has no '## checkpoints/{name}' section"
    return match.group(0)


def _figure(name: str, label: str) -> str:
    match = re.search(rf"\*\*{label}:\*\*\s*`?([^`\n]+)`?", _section(name))
    assert match, f"data/README.md's section on {name} does not state the {label}"
    return match.group(1).strip()


parametrize = pytest.mark.parametrize("name", CHECKPOINTS)


@parametrize
def test_the_folder_is_small_complete_and_read_by_its_chapters(name: str) -> None:
    folder = ROOT / "data" / "checkpoints" / name
    assert {path.name for path in folder.iterdir()} == FILES
    assert sum(path.stat().st_size for path in folder.iterdir()) < 3_000_000
    for chapter in CHECKPOINTS[name]:
        assert name in (ROOT / "notebooks" / chapter).read_text(encoding="utf-8"), chapter
    assert f"notebooks/{CHECKPOINTS[name][0]}" in _section(name)


@parametrize
def test_readme_gives_the_command_steps_and_loss_of_the_files(name: str) -> None:
    folder = ROOT / "data" / "checkpoints" / name
    command = json.loads((folder / "command.json").read_text())
    assert _figure(name, "Command") == command["command"]
    assert "repeat_fraction" not in command["command"].replace("-", "_")  # plain text only
    history = json.loads((folder / "history.json").read_text())
    assert int(_figure(name, "Steps").split()[0].replace(",", "")) == history["steps"][-1]
    loss = float(_figure(name, "Final validation loss").split()[0])
    assert loss == pytest.approx(history["val_loss"][-1], abs=5e-5)


@parametrize
def test_the_validation_loss_is_what_the_weights_give(name: str) -> None:
    folder = ROOT / "data" / "checkpoints" / name
    model, tokenizer, _ = load_checkpoint(folder)
    command = json.loads((folder / "command.json").read_text())
    run = json.loads((folder / "train_config.json").read_text())
    text = load_corpus(command["corpus"], command["max_chars"])
    _, val_ids = split(torch.tensor(tokenizer.encode(text)), command["val_fraction"])
    with torch.no_grad():
        loss = evaluate(model, val_ids, run["batch_size"], model.config.block_size,
                        n_batches=run["eval_batches"], seed=run["seed"] + 1)  # fmt: skip
    assert loss == pytest.approx(float(_figure(name, "Final validation loss").split()[0]), abs=2e-3)
