"""The shipped checkpoint data/checkpoints/char_python_docs agrees with what data/README.md says.

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
CHECKPOINT = ROOT / "data" / "checkpoints" / "char_python_docs"
README = ROOT / "data" / "README.md"


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## checkpoints/char_python_docs.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, "data/README.md has no '## checkpoints/char_python_docs' section"
    return match.group(0)


def _figure(name: str) -> str:
    match = re.search(rf"\*\*{name}:\*\*\s*`?([^`\n]+)`?", _readme_section())
    assert match, f"data/README.md's checkpoint section does not state the {name}"
    return match.group(1).strip()


def test_checkpoint_folder_is_small_and_complete() -> None:
    names = {path.name for path in CHECKPOINT.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "train_config.json",
                "history.json", "command.json"}  # fmt: skip
    assert names == expected, f"unexpected files {names ^ expected}"
    size = sum(path.stat().st_size for path in CHECKPOINT.iterdir())
    assert size < 5_000_000, f"the checkpoint is {size / 1e6:.1f} MB; keep it to a few MB"


def test_readme_gives_the_command_steps_and_loss_of_the_files() -> None:
    command = json.loads((CHECKPOINT / "command.json").read_text())["command"]
    assert _figure("Command") == command
    history = json.loads((CHECKPOINT / "history.json").read_text())
    assert int(_figure("Steps").split()[0].replace(",", "")) == history["steps"][-1]
    assert float(_figure("Final validation loss").split()[0]) == pytest.approx(
        history["val_loss"][-1], abs=5e-4
    )


def test_validation_loss_matches_the_readme() -> None:
    model = GPT.load(CHECKPOINT)
    _, tokenizer, _ = load_checkpoint(CHECKPOINT)
    run = json.loads((CHECKPOINT / "train_config.json").read_text())
    text = load_corpus("python-docs")
    try:
        ids = torch.tensor(tokenizer.encode(text))
    except ValueError as err:
        pytest.skip(f"this Python's docs ({sys.version.split()[0]}) are not the 3.11 ones: {err}")
    _, val_ids = split(ids, val_fraction=0.1)
    # The same fixed batches that training evaluated on: seed + 1, eval_batches of batch_size.
    loss = evaluate(model, val_ids, run["batch_size"], model.config.block_size,
                    n_batches=run["eval_batches"], seed=run["seed"] + 1)  # fmt: skip
    assert loss == pytest.approx(float(_figure("Final validation loss").split()[0]), abs=0.02)
