"""What an exact resume needs beyond the weights: optimizer, random states, loss scaler, settings.

Taught in notebooks/02_first_gpt.ipynb (resuming a run). `gptlib.train` saves this state in
each checkpoint (train_state.safetensors, no pickle) and checks, before resuming, that the
model, the run's settings and the tokenizer are those of the checkpoint.

Exactness also depends on things outside the checkpoint: the torch version, the device, the
number of CPU threads (matrix products split their sums by thread), the autocast dtype, the
number of processes and torch.compile. `environment` records them in the manifest and
`environment_changes` lists what differs when resuming, which `gptlib.train` prints as a
warning. `not_exact` says, for a run's settings, what cannot be bit-for-bit reproducible.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    STATE_FILE,
    TOKENIZER_FILE,
    TRAIN_CONFIG_FILE,
    read_json,
    sha256,
    write_tokenizer,
)
from .config import GPTConfig
from .model import CONFIG_FILE, WEIGHTS_FILE

__all__ = [
    "check_resumable",
    "data_fingerprint",
    "environment",
    "environment_changes",
    "load_train_state",
    "not_exact",
    "save_train_state",
]

STATE_FORMAT = "gptlib-train-state-v2"
OLD_STATE_FORMAT = "gptlib-train-state-v1"  # one process, CPU random state only
# Settings that may change when resuming: they do not change which batches are drawn or how
# the weights are updated (the dtype and the device change rounding only, see not_exact).
CHANGEABLE_ON_RESUME = (
    "max_steps", "device", "dtype", "compile", "track", "eval_interval", "checkpoint_interval",
)  # fmt: skip


def save_train_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    step: int,
    rng_states: list[dict[str, torch.Tensor]],
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write optimizer state, random states (one dict per process) and the step to path.

    rng_states[r] holds process r's torch random state ("cpu", and "cuda" on a GPU).
    """
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    tensors["rng.batches"] = batch_generator.get_state()
    for rank, states in enumerate(rng_states):
        for kind, value in states.items():
            tensors[f"rng.{kind}.{rank}"] = value.cpu()
    metadata = {
        "format": STATE_FORMAT,
        "step": str(step),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else {}),
        "world_size": str(len(rng_states)),
    }
    save_file(tensors, str(path), metadata=metadata)


def load_train_state(
    out: Path,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    rank: int = 0,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, bool]:
    """Restore what `save_train_state` wrote; return (step, whether this process's random
    state was in the file: False when resuming with more processes than saved it)."""
    from safetensors import SafetensorError, safe_open

    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing, so this checkpoint cannot be resumed (it was saved with "
            "--final-weights-only, or is not a training run); start a new run, e.g. with "
            f"--init-from {out}"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); resume is impossible") from err
    if metadata.get("format") not in (STATE_FORMAT, OLD_STATE_FORMAT):
        raise ValueError(f"{path} is not a gptlib training state ({metadata.get('format')!r})")
    if "model_sha256" in metadata and metadata["model_sha256"] != sha256(out / WEIGHTS_FILE):
        raise ValueError(
            f"{out / WEIGHTS_FILE} is not the file that {STATE_FILE} was saved with (the run "
            "was probably killed while writing a checkpoint); it cannot be resumed exactly: "
            "start a new run in an empty folder"
        )
    param_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            param_state.setdefault(int(param_id), {})[name] = value
    for param_id, values in json.loads(metadata["scalars"]).items():
        param_state.setdefault(int(param_id), {}).update(values)
    groups = json.loads(metadata["param_groups"])
    for group in groups:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": param_state, "param_groups": groups})
    batch_generator.set_state(tensors["rng.batches"])
    if scaler is not None and json.loads(metadata.get("scaler", "{}")):
        scaler.load_state_dict(json.loads(metadata["scaler"]))
    cpu_state = tensors.get(f"rng.cpu.{rank}", tensors.get("rng.torch") if rank == 0 else None)
    if cpu_state is not None:
        torch.set_rng_state(cpu_state)
    if f"rng.cuda.{rank}" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"])
    return int(metadata["step"]), cpu_state is not None


def global_batch_size(train_config: dict[str, Any], world_size: int) -> int:
    """Sequences per optimizer step: batch per process x gradient accumulation x processes."""
    return train_config["batch_size"] * train_config.get("grad_accum_steps", 1) * world_size


def data_fingerprint(source: Any) -> dict[str, Any] | None:
    """{"tokens": n, "sha256": ...} of a token stream, to tell on resume whether it changed.

    For a `gptlib.data.TokenWindows` (a tensor or memory-mapped token file); None for any other
    batch source. Streams up to 2**22 tokens are hashed whole; longer ones (a memory-mapped
    corpus of gigabytes) through 1024 evenly spaced windows of 4096 tokens and their length, so
    opening a run stays fast.
    """
    tokens = getattr(source, "tokens", None)
    if tokens is None:
        return None
    n = len(tokens)
    digest = hashlib.sha256(str(n).encode())
    window, pieces = 4096, 1024
    starts = [0] if n <= 2**22 else [i * (n - window) // (pieces - 1) for i in range(pieces)]
    for start in starts:
        piece = tokens[start : n if len(starts) == 1 else start + window]
        if isinstance(piece, torch.Tensor):
            piece = piece.cpu().numpy()
        digest.update(np.ascontiguousarray(piece, dtype=np.int64).tobytes())
    return {"tokens": n, "sha256": digest.hexdigest()}


def check_resumable(
    out: Path,
    model_config: GPTConfig,
    train_config: dict[str, Any],
    tokenizer: Any,
    world_size: int,
    manifest: dict[str, Any] | None,
    data: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume a checkpoint made by another model, other run settings, tokenizer or data.

    The batch per process and gradient accumulation may change when the global batch stays
    the same (resuming on another number of processes), and so may CHANGEABLE_ON_RESUME.
    data maps "train" and "val" to `data_fingerprint`s, compared with the manifest's (a
    checkpoint written before fingerprints were recorded is not compared).
    """
    saved = GPTConfig.from_dict(read_json(out / CONFIG_FILE))
    rows = model_config.diff(saved)
    if rows:
        changes = ", ".join(f"{name}: checkpoint {old!r}, now {new!r}" for name, new, old in rows)
        raise ValueError(
            f"{out} holds a different model ({changes}); use the same model "
            "settings to resume, or another output folder for a new run"
        )
    saved_run = read_json(out / TRAIN_CONFIG_FILE)
    saved_world = manifest.get("world_size", 1) if manifest else 1
    batch_fields = ("batch_size", "grad_accum_steps")
    changes = [
        f"{k}: checkpoint {saved_run.get(k)!r}, now {v!r}"
        for k, v in train_config.items()
        if k not in CHANGEABLE_ON_RESUME + batch_fields and saved_run.get(k, v) != v
    ]
    before = global_batch_size(saved_run, saved_world)
    now = global_batch_size(train_config, world_size)
    if before != now:
        changes.append(
            f"global batch: checkpoint {before} sequences ({saved_world} process(es)), now {now} "
            f"({world_size}); keep batch_size x grad_accum_steps x processes equal"
        )
    if changes:
        raise ValueError(
            f"{out} was trained with other settings ({'; '.join(changes)}); only "
            f"{', '.join(CHANGEABLE_ON_RESUME)} and the split of the global batch may change "
            "when resuming"
        )
    saved_data = (manifest or {}).get("data") or {}
    differ = [
        f"{part}: checkpoint {saved_data[part]['tokens']:,} tokens, now {now['tokens']:,}"
        + ("" if saved_data[part]["tokens"] != now["tokens"] else " (other ids)")
        for part, now in (data or {}).items()
        if now and saved_data.get(part) and saved_data[part] != now
    ]
    if differ:
        raise ValueError(
            f"{out} was trained on other data ({'; '.join(differ)}): resuming would not continue "
            "that run. Resume with the same data (the same --corpus/--text/--tokens, "
            "--max-chars and --val-fraction), or start a new run from its weights (--init-from)"
        )
    path = out / TOKENIZER_FILE
    if tokenizer is not None and path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            write_tokenizer(tokenizer, Path(tmp))
            same = (Path(tmp) / TOKENIZER_FILE).read_bytes() == path.read_bytes()
        if not same:
            raise ValueError(
                f"{path} differs from the tokenizer given now; resume with the same corpus "
                "and tokenizer settings"
            )


def environment(device: torch.device, train_config: dict[str, Any], world_size: int) -> dict:
    """What a run's exact numbers depend on besides its checkpoint (recorded in the manifest)."""
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "dtype": train_config["dtype"],
        "compile": train_config["compile"],
    }


def environment_changes(saved: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """One line per recorded condition that differs between a checkpoint and this run."""
    if not saved:
        return []
    return [
        f"{key}: checkpoint {saved[key]!r}, now {now[key]!r}"
        for key in now
        if key in saved and saved[key] != now[key]
    ]


def not_exact(
    device: torch.device, train_config: dict[str, Any], world_size: int, dropout: float
) -> list[str]:
    """What cannot be made bit-for-bit exact under these settings (documented in README's
    "Train your own" and stored in each checkpoint's manifest)."""
    notes = []
    if world_size > 1:
        notes.append(
            "gradients are averaged across processes by all-reduce, which sums in another "
            "order than one process: losses agree with a one-process run to float tolerance, "
            "not bit for bit"
        )
        if dropout > 0:
            notes.append(
                "dropout masks depend on how the batch is split across processes: with "
                "dropout > 0 runs on different numbers of processes differ"
            )
    if device.type == "cuda":
        notes.append(
            "CUDA kernels (attention backward, embedding backward, scatter-adds) are not "
            "deterministic: two runs, or a run and its resume, differ in the last bits"
        )
    if device.type == "mps":
        notes.append("MPS kernels are not guaranteed deterministic")
    if train_config["dtype"] != "float32":
        notes.append(
            f"autocast to {train_config['dtype']} rounds activations: losses differ from a "
            "float32 run, and between devices"
        )
    if train_config["compile"]:
        notes.append("torch.compile fuses operations, which changes rounding against eager mode")
    return notes
