"""Small models, runs and command lines shared by the training tests (test_train*.py,
test_checkpoint.py, test_distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptlib import GPT, GPTConfig
from gptlib.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

# A command line whose run takes well under a second per step on a busy CPU.
CLI_TINY = ["--corpus", "stories", "--max-chars", "5000", "--n-layer", "1", "--n-head", "2",
            "--n-embd", "16", "--block-size", "16", "--batch-size", "4", "--warmup-steps", "2",
            "--eval-interval", "3", "--eval-batches", "2", "--device", "cpu", "--no-progress"]  # fmt: skip


def tiny_model(vocab_size: int, dropout: float = 0.0, n_layer: int = 2, n_embd: int = 32) -> GPT:
    """A seeded 2-layer GPT-2-style model with a 16-token window."""
    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=n_layer, n_head=2, n_embd=n_embd, block_size=16, vocab_size=vocab_size,
        dropout=dropout,
    )  # fmt: skip
    return GPT(config)


def tiny_config(**overrides) -> TrainConfig:
    """20 steps of 8 windows, evaluated every 5 and saved every 10."""
    settings = dict(max_steps=20, batch_size=8, warmup_steps=4, lr=3e-3, eval_interval=5,
                    eval_batches=2, checkpoint_interval=10)  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def weights(model: GPT) -> dict[str, torch.Tensor]:
    """A detached copy of every tensor of the model's state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    """Every tensor of two state dicts agrees (exactly, or within the given tolerances)."""
    assert a.keys() == b.keys()
    for name, value in a.items():
        if tol:
            torch.testing.assert_close(b[name], value, **tol)
        else:
            assert torch.equal(b[name], value), name


def saved_weights(out: Path) -> dict[str, torch.Tensor]:
    """The weights of the checkpoint in out."""
    return weights(GPT.load(out))


def history(out: Path) -> dict:
    """The history.json of the checkpoint in out."""
    return json.loads((out / "history.json").read_text())
