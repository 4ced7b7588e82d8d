"""The shipped checkpoints in data/checkpoints agree with what data/README.md says about them.

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
from gptlib.train import evaluate, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "data" / "README.md"
CORPUS = {"char_python_docs": "python-docs", "bpe_code_tasks": "code-tasks"}  # checkpoint: corpus
CHECKPOINTS = list(CORPUS)


def _readme_section(checkpoint: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## checkpoints/{checkpoint}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"data/README.md has no '## checkpoints/{checkpoint}' section"
    return match.group(0)


def _figure(name: str, checkpoint: str) -> str:
    match = re.search(rf"\*\*{name}:\*\*\s*`?([^`\n]+)`?", _readme_section(checkpoint))
    assert match, f"data/README.md's section on {checkpoint} does not state the {name}"
    return match.group(1).strip()


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_checkpoint_folder_is_small_and_complete(checkpoint: str) -> None:
    folder = ROOT / "data" / "checkpoints" / checkpoint
    names = {path.name for path in folder.iterdir()}
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
