"""The files of a training checkpoint: weights, optimizer and random state, tokenizer, history.

Taught in notebooks/02_first_gpt.ipynb (loading the checkpoint in data/checkpoints).
`gptlib.train` writes these files; this module only knows how to write and read them, with no
pickle anywhere (safetensors for tensors, JSON for everything else) and every file replaced
atomically, so a crash or Ctrl-C leaves either the old file or the new one, never half of one.

A checkpoint folder holds:

- ``config.json`` and ``model.safetensors``: the model, as `GPT.save` writes it;
- ``tokenizer.json``: the tokenizer (`CharTokenizer` or `BPETokenizer`), when there is one;
- ``train_config.json``: the `TrainConfig` of the run; ``history.json``: its loss curves;
- ``train_state.safetensors``: AdamW's moments, the random-number states and, in its metadata,
  the step, the optimizer's hyper-parameters and a hash of the weights. It is written last, so
  its step says which checkpoint is complete; the hash catches weights from another step.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .model import CONFIG_FILE, WEIGHTS_FILE, _atomic_write
from .tokenizers import BPETokenizer, CharTokenizer

TOKENIZER_FILE = "tokenizer.json"
TRAIN_CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
STATE_FILE = "train_state.safetensors"
STATE_FORMAT = "gptlib-train-state-v1"
TOKENIZERS: dict[str, type] = {"gptlib-char": CharTokenizer, "gptlib-byte-level-bpe": BPETokenizer}


def write_json(path: Path, data: Any) -> None:
    """Write data as indented JSON, atomically."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: Path) -> Any:
    """Read a JSON file of a checkpoint, with an error that says which file is broken."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; is {path.parent} a gptlib checkpoint folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); retrain or restore it") from err


def has_checkpoint(out_dir: Path) -> bool:
    """Whether out_dir already holds (part of) a checkpoint."""
    return any((out_dir / name).exists() for name in (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE))


def save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Write a gptlib tokenizer's JSON file atomically."""
    if not hasattr(tokenizer, "save"):
        raise TypeError(
            f"cannot save a {type(tokenizer).__name__} in a checkpoint; pass a gptlib "
            "CharTokenizer or BPETokenizer (or tokenizer=None)"
        )
    _atomic_write(path, lambda tmp: tokenizer.save(tmp))


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Read a tokenizer file written by a checkpoint, choosing the class from its "format"."""
    path = Path(path)
    kind = read_json(path).get("format")
    if kind not in TOKENIZERS:
        raise ValueError(
            f"{path} holds an unknown tokenizer format {kind!r}; known: {list(TOKENIZERS)}"
        )
    return TOKENIZERS[kind].load(path)


def _weights_hash(out_dir: Path) -> str:
    return hashlib.sha256((out_dir / WEIGHTS_FILE).read_bytes()).hexdigest()


def save_train_state(
    out_dir: Path,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    step: int,
) -> None:
    """Write the optimizer state, the random-number states and the step; call it after GPT.save."""
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
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": STATE_FORMAT,
        "step": str(step),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        "model_sha256": _weights_hash(out_dir),
    }
    _atomic_write(out_dir / STATE_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_train_state(
    out_dir: Path,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
) -> int:
    """Restore what `save_train_state` wrote into optimizer, generator and torch's global RNG;
    return the step."""
    from safetensors import SafetensorError, safe_open

    path = out_dir / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing, so there is no training state to resume from; train without "
            "resume (--resume) first, or point at the folder of an unfinished run"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); resume is impossible") from err
    if metadata.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path} is not a gptlib training state (format {metadata.get('format')!r})"
        )
    if metadata["model_sha256"] != _weights_hash(out_dir):
        raise ValueError(
            f"{out_dir / WEIGHTS_FILE} is not the file that {STATE_FILE} was saved with (the run "
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
    torch.set_rng_state(tensors["rng.torch"])
    return int(metadata["step"])


def check_resumable(
    out_dir: Path, model_config: GPTConfig, train_config: dict[str, Any], tokenizer: Any
) -> None:
    """Refuse to resume a checkpoint made by another model, other run settings or tokenizer."""
    saved = GPTConfig.from_dict(read_json(out_dir / CONFIG_FILE))
    rows = model_config.diff(saved)
    if rows:
        changes = ", ".join(f"{name}: checkpoint {old!r}, now {new!r}" for name, new, old in rows)
        raise ValueError(
            f"{out_dir} holds a different model ({changes}); use the same model "
            "settings to resume, or another out_dir for a new run"
        )
    saved_run = read_json(out_dir / TRAIN_CONFIG_FILE)
    changes = [
        f"{k}: checkpoint {saved_run.get(k)!r}, now {v!r}"
        for k, v in train_config.items()
        if k not in ("max_steps", "device") and saved_run.get(k) != v
    ]
    if changes:
        raise ValueError(
            f"{out_dir} was trained with other settings ({'; '.join(changes)}); "
            "only max_steps and device may change when resuming"
        )
    path = out_dir / TOKENIZER_FILE
    if tokenizer is not None and path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            save_tokenizer(tokenizer, Path(tmp) / TOKENIZER_FILE)
            same = (Path(tmp) / TOKENIZER_FILE).read_bytes() == path.read_bytes()
        if not same:
            raise ValueError(
                f"{path} differs from the tokenizer given now; resume with the same corpus "
                "and tokenizer settings"
            )
