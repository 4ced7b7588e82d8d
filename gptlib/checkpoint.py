"""The files of a training checkpoint: weights, optimizer and random state, tokenizer, history.

Taught in notebooks/02_first_gpt.ipynb (loading one). `gptlib.train` decides when to save; this
module writes and reads the folder so that no kill, at any instant, loses a finished checkpoint.
There is no pickle anywhere: safetensors for tensors, JSON for everything else.

A checkpoint folder ``out`` holds, at its top level (where `GPT.load(out)` and
`gptlib.train.load_checkpoint(out)` read):

- ``config.json`` and ``model.safetensors`` (every file `GPT.save` writes): the model;
- ``tokenizer.json``: the tokenizer (`gptlib.run_tokenizer`), when the run has one;
- ``train_config.json``: the `TrainConfig`; ``history.json``: the loss curves;
- ``train_state.safetensors``: AdamW's moments, the random-number states, the loss scaler and
  the step (`gptlib.train_state`); deleted by ``--final-weights-only``;
- ``checkpoint.json``: the manifest: the step, the sha256 of every file above, ``world_size``
  and the global batch, the environment exactness depends on (`gptlib.train_state`), and what
  the run's settings cannot make exact;
- ``command.json``: the command line that made the run (written by `python -m gptlib.train`).

**How a save survives a kill.** A save first writes every file into ``out/.staging/`` and
flushes it to disk; the existing checkpoint is untouched. Then it writes
``.staging/checkpoint.json``: the commit point. Only then are the files moved to the top level,
each by one atomic rename, the manifest last, and ``.staging`` is removed. When the next run
(or `load_checkpoint`) finds ``.staging``: without a manifest, the save had not committed, so
the staged files are deleted and the previous checkpoint is whole; with one, it had, so the
remaining renames are done (roll forward) and the new checkpoint is whole. Temporary files
that a kill left beside the checkpoint are removed too. Until a checkpoint has been committed
once, the folder holds no checkpoint: a fresh start or ``--resume`` then begins at step 0 and
says so. Files renamed one at a time mean that a reader between a kill and the next start may
see the new weights beside the old history: `GPT.load` then loads a whole model (the weights
file is replaced in one step), and `load_checkpoint` finishes the roll forward first.

**One run per folder.** A run holds ``out/.lock`` (an OS file lock, released by the kernel if
the process dies): a second run on the same folder stops at once with a message. Only rank 0
of a distributed run writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .model import CONFIG_FILE, GPT, WEIGHTS_FILE, _atomic_write
from .run_tokenizer import load_tokenizer, save_tokenizer, tokenizer_vocab_size
from .train_config import History

__all__ = [
    "MANIFEST_FILE",
    "FolderLock",
    "commit",
    "drop",
    "has_checkpoint",
    "load_checkpoint",
    "open_run_folder",
    "read_json",
    "read_manifest",
    "recover",
    "verify",
    "write_json",
]

TOKENIZER_FILE = "tokenizer.json"
TRAIN_CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
STATE_FILE = "train_state.safetensors"
MANIFEST_FILE = "checkpoint.json"
COMMAND_FILE = "command.json"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
MANIFEST_FORMAT = "gptlib-checkpoint-v1"
CRASH_ENV = "GPTLIB_TEST_CRASH_AT"  # tests only: SIGKILL this process at the N-th crash point
_crash_points_passed = 0


def crash_point(label: str) -> None:
    """Mark a moment of a save at which a kill is survivable; tests kill the process here.

    With the environment variable GPTLIB_TEST_CRASH_AT=N, the N-th crash point this process
    reaches kills it with SIGKILL (what `kill -9` sends), so a test can kill a real training
    process at each dangerous moment instead of relying on timing.
    """
    global _crash_points_passed
    _crash_points_passed += 1
    if os.environ.get(CRASH_ENV) == str(_crash_points_passed):
        print(f"[test] killed at crash point {_crash_points_passed}: {label}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def write_json(path: Path, data: Any) -> None:
    """Write data as indented JSON, atomically."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file of a checkpoint (every one holds an object), with an error that says
    which file is broken."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; is {path.parent} a gptlib checkpoint folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); retrain or restore it") from err
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a JSON {type(data).__name__}, not the object of a checkpoint file; "
            "retrain or restore it"
        )
    return data


def _check_manifest(
    manifest: Any, path: Path, fix: str = "restore it, or start a new run"
) -> dict[str, Any]:
    """manifest if it has the format tag, the step and the sha256 of every file, else ValueError."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or not isinstance(manifest.get("step"), int)
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise ValueError(
            f"{path} is not a gptlib checkpoint manifest ({MANIFEST_FORMAT}, with the step and "
            f"the sha256 of every file); it is damaged: {fix}"
        )
    return manifest


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file (or, on POSIX, a folder's entries) to disk, so a power cut keeps it too."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def has_checkpoint(out: Path) -> bool:
    """Whether out holds a committed checkpoint (or files of one written before manifests)."""
    names = (MANIFEST_FILE, CONFIG_FILE, WEIGHTS_FILE, STATE_FILE)
    return any((out / name).exists() for name in names)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of out's checkpoint, or None for a checkpoint written before manifests."""
    path = out / MANIFEST_FILE
    if not path.exists():
        return None
    return _check_manifest(read_json(path), path)


def verify(out: Path, names: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    """Check that out's files are those its manifest names (all of them, or only `names`).

    Returns the manifest (None for an old checkpoint without one). Raises ValueError naming a
    file that is missing or was changed after the checkpoint was committed.
    """
    manifest = read_manifest(out)
    if manifest is None:
        return None
    for name, digest in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = out / name
        if not path.is_file():
            raise ValueError(f"{path} is missing, though {MANIFEST_FILE} lists it; restore it")
        if sha256(path) != digest:
            raise ValueError(
                f"{path} is not the file this checkpoint was saved with (its sha256 differs from "
                f"{MANIFEST_FILE}'s); it was changed or damaged: restore it or train again"
            )
    return manifest


def commit(
    out: Path, write_files: Callable[[Path], None], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Save a checkpoint into out so that a kill at any moment leaves the old or the new one.

    write_files(folder) writes the checkpoint's files into a staging folder; this function
    adds the manifest (manifest plus the files' sha256) and moves everything into out, as the
    module docstring describes. Returns the manifest written.
    """
    staging = out / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_files(staging)
    files = {}
    for path in sorted(staging.iterdir()):
        if path.name.startswith("."):
            continue  # a writer's own temporary file
        os.chmod(path, 0o644)  # an ordinary file, whatever mode its writer chose
        _fsync(path)
        files[path.name] = sha256(path)
        crash_point(f"staged {path.name}")
    manifest = {"format": MANIFEST_FORMAT, **manifest, "files": files}
    tmp = staging / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _fsync(tmp)
    crash_point("manifest written, not committed")
    os.replace(tmp, staging / MANIFEST_FILE)
    _fsync(staging)
    crash_point("committed")
    _roll_forward(out, manifest)
    return manifest


def _roll_forward(out: Path, manifest: dict[str, Any]) -> None:
    """Move a committed staging folder's files into out, the manifest last, then remove it."""
    staging = out / STAGING_DIR
    for name in [*manifest["files"], MANIFEST_FILE]:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
            crash_point(f"moved {name}")
    _fsync(out)
    shutil.rmtree(staging)
    crash_point("staging removed")


def recover(out: Path) -> list[str]:
    """Finish or undo a save that a kill interrupted, and delete leftover temporary files.

    Call it while holding the folder's lock. Returns one message per thing it did.
    """
    messages = []
    for tmp in out.glob(".*.tmp"):
        tmp.unlink()
        messages.append(f"removed {tmp.name}, a temporary file left by a killed run")
    staging = out / STAGING_DIR
    if not staging.exists():
        return messages
    try:
        manifest = json.loads((staging / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if manifest is not None:  # committed: written whole by one rename, so only tampering
        fix = f"delete {staging} to keep the previous checkpoint"  # could damage it
        _check_manifest(manifest, staging / MANIFEST_FILE, fix)
        _roll_forward(out, manifest)
        messages.append(
            f"finished saving the checkpoint of step {manifest['step']}, which a killed run "
            "had committed but not yet moved into place"
        )
    else:
        shutil.rmtree(staging)
        before = "the previous checkpoint is intact" if has_checkpoint(out) else "none was whole"
        messages.append(
            f"removed an unfinished checkpoint from {out} (the run was killed while saving "
            f"it); {before}"
        )
    return messages


class FolderLock:
    """An exclusive lock on a run's output folder (out/.lock), so two runs never share one.

    `acquire` creates the folder if needed; it raises RuntimeError at once if another process
    holds the lock, and PermissionError if the folder cannot be written (checked here, before
    any training step). Use it as a context manager; release deletes the lock file.
    """

    def __init__(self, out: Path) -> None:
        from filelock import FileLock

        self.out = out
        self.path = out / LOCK_FILE
        self._lock = FileLock(str(self.path), timeout=0)

    def acquire(self) -> FolderLock:
        """Take the lock now or raise (see the class docstring); returns self."""
        from filelock import Timeout

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise RuntimeError(
                f"{self.out} is in use by another training run (it holds {self.path}); wait for "
                "it to finish, or choose another output folder"
            ) from None
        except OSError as err:
            raise PermissionError(
                f"cannot write to the output folder {self.out} ({err.strerror or err}); make it "
                "writable or choose another one"
            ) from err
        return self

    def release(self) -> None:
        """Give the lock back and delete out/.lock (nothing if it is not held)."""
        if self._lock.is_locked:
            self.path.unlink(missing_ok=True)  # while still held: no one else can own it
            self._lock.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save tokenizer as folder/tokenizer.json (nothing when tokenizer is None)."""
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder / TOKENIZER_FILE)


def read_tokenizer(folder: Path) -> Any:
    """The tokenizer saved in folder, or None when there is none."""
    path = folder / TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else None


def note(message: str) -> None:
    """Tell the user something about their checkpoint folder, on stderr."""
    print(f"gptlib: {message}", file=sys.stderr)


def drop(out: Path, names: tuple[str, ...]) -> None:
    """Delete some of a committed checkpoint's files (e.g. the training state), manifest first."""
    manifest = read_manifest(out)
    if manifest is not None:
        manifest["files"] = {k: v for k, v in manifest["files"].items() if k not in names}
        write_json(out / MANIFEST_FILE, manifest)
    for name in names:
        (out / name).unlink(missing_ok=True)


def open_run_folder(out: Path, resume: bool, lock: list) -> tuple[bool, dict | None]:
    """Lock out (appending the lock to `lock`), repair what a kill left, and decide whether the
    run resumes: (resume, the verified manifest or None).

    A folder that holds no finished checkpoint but the leftovers of a killed first save
    starts at step 0, with a note, even when resume was asked for.
    """
    lock.append(FolderLock(out).acquire())
    messages = recover(out)
    for message in messages:
        note(message)
    if has_checkpoint(out):
        if not resume:
            raise FileExistsError(
                f"{out} already holds a checkpoint; pass resume=True (--resume) "
                "to continue it, or choose a new out_dir"
            )
        return True, verify(out)
    if resume and not (messages or (out / COMMAND_FILE).exists()):
        raise FileNotFoundError(
            f"{out} holds no checkpoint to resume; train without resume (--resume) first"
        )
    if resume:
        note(f"{out} holds no finished checkpoint yet, so training starts at step 0")
    return False, None


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[GPT, Any, History]:
    """Load a checkpoint folder written by `train`: (model in eval mode, tokenizer or None, history).

    Taught in notebooks/02_first_gpt.ipynb; chapter 15 (attention maps) uses it too.

    A save that a kill interrupted is finished or undone first (when no run holds the folder),
    and every file is checked against the manifest's sha256. Raises FileNotFoundError for a
    missing folder and ValueError for a damaged file or a tokenizer that does not fit the model.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no checkpoint folder at {path}; train one with python -m gptlib.train"
        )
    if (path / STAGING_DIR).exists():
        with contextlib.suppress(RuntimeError, PermissionError), FolderLock(path):
            for message in recover(path):
                note(message)
    for attempt in range(20):
        try:
            manifest = verify(path)
            break
        except ValueError:  # a running training may be moving its next checkpoint into place
            if attempt == 19 or not (path / STAGING_DIR).exists():
                raise
            time.sleep(0.25)
    model = GPT.load(path, map_location=map_location)
    tokenizer = read_tokenizer(path)
    if tokenizer is not None:
        size, vocab = tokenizer_vocab_size(tokenizer), model.config.vocab_size
        recorded = (manifest or {}).get("tokenizer_vocab_size")
        if size > vocab or (size != vocab and recorded != size):
            raise ValueError(
                f"{path / TOKENIZER_FILE} has {size} ids but the model's vocab_size is "
                f"{vocab}: it is not the tokenizer this model was trained with; restore the "
                "run's own tokenizer.json"
            )
    hist_path = path / HISTORY_FILE
    history = History.from_dict(read_json(hist_path)) if hist_path.is_file() else History()
    return model, tokenizer, history
