"""Data-parallel training: `torchrun --standalone --nproc_per_node=2 -m gptlib.train` on gloo
gives the losses of one process with the same global batch, and checkpoints move between 1
and 2 processes in both directions."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from training_helpers import CLI_TINY, ROOT, assert_same_weights, history, saved_weights

from gptlib.train import main

# A constant learning rate (no warmup, min_lr = lr), so a run of 2 steps then 2 more follows
# the same schedule as one of 4.
RUN = [*CLI_TINY, "--warmup-steps", "0", "--lr", "3e-3", "--min-lr", "3e-3", "--eval-interval",
       "2", "--threads", "1"]  # fmt: skip
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def torchrun(*argv: str) -> None:
    """Run python -m gptlib.train under torchrun with 2 CPU processes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "gptlib.train", *argv]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """4 steps of one process with batches of 8, and the checkpoint of its first 2 steps."""
    base = tmp_path_factory.mktemp("one")
    threads = torch.get_num_threads()
    try:
        main(["--out", str(base / "straight"), *RUN, "--batch-size", "8", "--max-steps", "4"])
        main(["--out", str(base / "half"), *RUN, "--batch-size", "8", "--max-steps", "2"])
    finally:
        torch.set_num_threads(threads)
    return {"dir": base, "history": history(base / "straight"),
            "weights": saved_weights(base / "straight")}  # fmt: skip


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_two_processes_train_like_one_and_hand_over_to_one(one_process, tmp_path) -> None:
    out = tmp_path / "two"
    torchrun("--out", str(out), *RUN, "--batch-size", "4", "--max-steps", "2")
    two, one = history(out), one_process["history"]
    assert two["train_loss"] == pytest.approx(one["train_loss"][:2], rel=1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"][:1], rel=1e-5)
    manifest = json.loads((out / "checkpoint.json").read_text())
    assert (manifest["world_size"], manifest["global_batch_size"]) == (2, 8)
    assert any("all-reduce" in note for note in manifest["not_exact"])
    # Written by 2 processes, continued by 1 with the whole batch in one process:
    threads = torch.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="world_size: checkpoint 2, now 1"):
            main(["--out", str(out), "--resume", "--max-steps", "4", "--batch-size", "8"])
    finally:
        torch.set_num_threads(threads)
    assert history(out)["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert_same_weights(one_process["weights"], saved_weights(out), **TOLERANCE)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_a_one_process_checkpoint_resumes_in_two(one_process, tmp_path) -> None:
    out = shutil.copytree(one_process["dir"] / "half", tmp_path / "half")
    torchrun("--out", str(out), "--resume", "--max-steps", "4", "--batch-size", "2",
             "--grad-accum-steps", "2")  # fmt: skip
    assert history(out)["train_loss"] == pytest.approx(one_process["history"]["train_loss"],
                                                       rel=1e-5)  # fmt: skip
    assert_same_weights(one_process["weights"], saved_weights(out), **TOLERANCE)
    manifest = json.loads((out / "checkpoint.json").read_text())
    assert (manifest["world_size"], manifest["grad_accum_steps"]) == (2, 2)
