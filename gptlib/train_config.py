"""The settings and the record of a training run: `TrainConfig` and `History`.

Taught in notebooks/02_first_gpt.ipynb. `gptlib.train` runs the loop; both classes are also
importable from there, and both round-trip through JSON (a checkpoint's train_config.json and
history.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import _flag, _integer, _real

__all__ = ["DTYPES", "DivergedError", "History", "TrainConfig"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    """The settings of one training run; defaults suit a small character-level model on a CPU.

    The global batch of one optimizer step is batch_size x grad_accum_steps x processes
    sequences; a run's numbers depend on the global batch, not on how it is split.
    """

    max_steps: int = 1000
    batch_size: int = 32  # sequences per process per forward pass (a micro-batch)
    block_size: int | None = None  # training window; None: the model's block_size
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float | None = None  # end of the cosine; None: lr / 10, as GPT-3 decays to 10%
    warmup_steps: int | None = None  # None: min(100, max_steps // 10), 10% of a short run
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # largest global gradient norm; None: no clipping
    eval_interval: int = 100  # evaluate every this many steps (and after the last one)
    eval_batches: int = 10  # fixed batches averaged by each evaluation
    checkpoint_interval: int | None = None  # None: save whenever we evaluate (needs out_dir)
    repeat_fraction: float = 0.0  # share of training windows that repeat a passage (see below)
    seed: int = 0
    device: str = "cpu"  # cpu, cuda, cuda:N, mps, or auto (CUDA, then MPS, then CPU)
    grad_accum_steps: int = 1  # micro-batches summed before each optimizer step
    dtype: str = "float32"  # autocast dtype: float32 (none), bfloat16, float16 (loss scaling)
    compile: bool = False  # torch.compile the model
    track: tuple[str, ...] = ()  # names in TRACKERS, measured at each evaluation

    def __post_init__(self) -> None:
        # The fields the defaults below are computed from are checked first.
        self.lr = _real("lr", self.lr, "> 0 (such as 1e-3)", lambda x: x > 0)
        self.max_steps = _integer("max_steps", self.max_steps)
        self.eval_interval = _integer("eval_interval", self.eval_interval)
        if isinstance(self.betas, (list, tuple)):
            self.betas = tuple(self.betas)
        if isinstance(self.track, str):  # one tracker named on its own, not its characters
            self.track = (self.track,)
        if isinstance(self.track, (list, tuple)):
            self.track = tuple(dict.fromkeys(self.track))  # each tracker once
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.max_steps // 10)
        if self.checkpoint_interval is None:
            self.checkpoint_interval = self.eval_interval
        self.validate()

    def validate(self) -> None:
        """Check every field's type and range, and the fields against each other.

        Integers and numbers are normalised to int and float (NumPy's are accepted). Raises
        TypeError for a value of the wrong type (a string for a number, a number for the
        bool `compile`) and ValueError for one out of range, each naming the field, the value
        and what is allowed.
        """
        for name in (
            "max_steps", "batch_size", "eval_interval", "eval_batches", "grad_accum_steps",
            "checkpoint_interval",
        ):  # fmt: skip
            setattr(self, name, _integer(name, getattr(self, name)))
        self.block_size = _integer("block_size", self.block_size, optional=True)
        self.warmup_steps = _integer("warmup_steps", self.warmup_steps, minimum=0)
        self.seed = _integer("seed", self.seed, minimum=0)
        if self.seed >= 2**63:
            raise ValueError(f"seed={self.seed} is out of range; seed must be below 2**63")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must be between 0 and max_steps={self.max_steps}"
            )
        self.lr = _real("lr", self.lr, "> 0 (such as 1e-3)", lambda x: x > 0)
        self.min_lr = _real("min_lr", self.min_lr, ">= 0", lambda x: x >= 0)
        if not 0 < self.lr or not 0 <= self.min_lr <= self.lr:
            raise ValueError(
                f"need 0 <= min_lr <= lr and lr > 0; got lr={self.lr}, min_lr={self.min_lr}"
            )
        self.weight_decay = _real("weight_decay", self.weight_decay, ">= 0", lambda x: x >= 0)
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise ValueError(
                f"betas={self.betas!r} must be two numbers in [0, 1), AdamW's (beta1, beta2), "
                "such as (0.9, 0.95)"
            )
        self.betas = tuple(_real("betas", b, "in [0, 1)", lambda x: 0 <= x < 1) for b in self.betas)
        if self.grad_clip is not None:
            self.grad_clip = _real(
                "grad_clip", self.grad_clip, "> 0 or None (no clipping)", lambda x: x > 0
            )
        self.repeat_fraction = _real(
            "repeat_fraction", self.repeat_fraction, "in [0, 1]", lambda x: 0 <= x <= 1
        )
        if not isinstance(self.device, str):
            raise TypeError(
                f"device={self.device!r} must be a string such as 'cpu', 'cuda', 'cuda:1', "
                "'mps' or 'auto'"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown; choose one of {list(DTYPES)}")
        self.compile = _flag("compile", self.compile)
        from .train import TRACKERS

        if not isinstance(self.track, tuple):
            raise TypeError(f"track={self.track!r} must be a list of tracker names")
        unknown = [name for name in self.track if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker(s) {unknown}; registered: {list(TRACKERS)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["betas"], d["track"] = list(self.betas), list(self.track)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error."""
        if not isinstance(d, dict):
            raise TypeError(f"a TrainConfig is read from a dict of fields, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class History:
    """What happened during training, for plotting: one entry per step, one per evaluation."""

    steps: list[int] = field(default_factory=list)  # optimizer steps taken so far, 1, 2, ...
    train_loss: list[float] = field(default_factory=list)  # loss of that step's global batch
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # mean over the fixed validation batches
    eval_train_loss: list[float] = field(default_factory=list)  # same, on fixed training batches
    seconds: float = 0.0  # wall-clock training time, summed over resumed runs
    tracked: dict[str, list[float]] = field(default_factory=dict)  # "tracker/key": per eval step

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of to_dict; a ValueError names a key that is not a History field."""
        if not isinstance(d, dict):
            raise TypeError(f"a History is read from a dict of fields, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown History fields {sorted(unknown)}")
        return cls(**d)

    def truncate(self, step: int) -> None:
        """Forget everything recorded after `step` (used when resuming from that step)."""
        keep = sum(s <= step for s in self.steps)
        keep_eval = sum(s <= step for s in self.eval_steps)
        for name in ("steps", "train_loss", "lr", "grad_norm"):
            del getattr(self, name)[keep:]
        for values in (
            self.eval_steps,
            self.val_loss,
            self.eval_train_loss,
            *self.tracked.values(),
        ):
            del values[keep_eval:]


class DivergedError(FloatingPointError):
    """The loss or the weights stopped being finite; `history` holds the run up to there."""

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history
