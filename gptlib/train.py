"""Training: AdamW, warmup then cosine decay, evaluation, a progress bar, checkpoints and resume.

Taught in notebooks/02_first_gpt.ipynb; every later chapter that trains a model uses `train`.

From Python::

    history = train(model, train_ids, val_ids, TrainConfig(max_steps=500), out_dir="runs/x")

From a terminal (the checkpoints in data/checkpoints were made this way)::

    python -m gptlib.train --corpus python-docs --out runs/char --n-layer 4 --max-steps 2000

The checkpoint folder's files are described in gptlib/checkpoint.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .data import get_batch
from .model import GPT

__all__ = ["History", "TrainConfig", "evaluate", "load_checkpoint", "lr_at", "main", "train"]


@dataclass
class TrainConfig:
    """The settings of one training run; defaults suit a small character-level model on a CPU."""

    max_steps: int = 1000
    batch_size: int = 32
    block_size: int | None = None  # training window; None: the model's block_size
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float | None = None  # end of the cosine; None: lr / 10, as GPT-3 decays to 10%
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # largest global gradient norm; None: no clipping
    eval_interval: int = 100  # evaluate every this many steps (and after the last one)
    eval_batches: int = 10  # fixed batches averaged by each evaluation
    checkpoint_interval: int | None = None  # None: save whenever we evaluate (needs out_dir)
    repeat_fraction: float = 0.0  # share of training windows that repeat a passage (see below)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.checkpoint_interval is None:
            self.checkpoint_interval = self.eval_interval
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in ("max_steps", "batch_size", "eval_interval", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.checkpoint_interval < 1:
            raise ValueError(
                f"checkpoint_interval must be positive, got {self.checkpoint_interval}"
            )
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be positive or None, got {self.block_size}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must be between 0 and max_steps={self.max_steps}"
            )
        if not 0 < self.lr or not 0 <= self.min_lr <= self.lr:
            raise ValueError(
                f"need 0 <= min_lr <= lr and lr > 0; got lr={self.lr}, min_lr={self.min_lr}"
            )
        if not 0.0 <= self.repeat_fraction <= 1.0:
            raise ValueError(f"repeat_fraction must be in [0, 1], got {self.repeat_fraction}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class History:
    """What happened during training, for plotting: one entry per step, one per evaluation."""

    steps: list[int] = field(default_factory=list)  # optimizer steps taken so far, 1, 2, ...
    train_loss: list[float] = field(default_factory=list)  # loss of that step's batch
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # mean over the fixed validation batches
    eval_train_loss: list[float] = field(default_factory=list)  # same, on fixed training batches
    seconds: float = 0.0  # wall-clock training time, summed over resumed runs

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of to_dict."""
        return cls(**d)

    def truncate(self, step: int) -> None:
        """Forget everything recorded after `step` (used when resuming from that step)."""
        keep, keep_eval = (
            sum(s <= step for s in self.steps),
            sum(s <= step for s in self.eval_steps),
        )
        for name in ("steps", "train_loss", "lr", "grad_norm"):
            del getattr(self, name)[keep:]
        for name in ("eval_steps", "val_loss", "eval_train_loss"):
            del getattr(self, name)[keep_eval:]


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to min_lr.

    Taught in notebooks/02_first_gpt.ipynb. GPT-3 (Brown et al. 2020, appendix B) warms up
    linearly and then decays with a cosine to 10% of the peak.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(
        1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    )
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def repeat_passages(
    x: torch.Tensor, y: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random share of the windows by a passage of their own text said twice or more.

    Used to train data/checkpoints/char_python_docs for chapter 15. A window of T tokens whose
    first L tokens (T/4 <= L <= T/2) repeat gives a model a lot to gain from copying: once a
    passage recurs, each next token is the one that followed its earlier occurrence. Real text
    holds such repeats too, but a small model on a CPU budget sees too few of them for
    induction heads (Olsson et al. 2022) to form; these windows give it enough. Validation
    windows are never changed.
    """
    if fraction == 0.0:
        return x, y
    B, T = x.shape
    chosen = torch.rand(B, generator=generator) < fraction
    lengths = torch.randint(max(2, T // 4), max(3, T // 2 + 1), (B,), generator=generator)
    x, y = x.clone(), y.clone()
    for row in chosen.nonzero().flatten().tolist():
        text = torch.cat([x[row], y[row, -1:]])[: lengths[row]]
        repeated = text.repeat(math.ceil((T + 1) / len(text)))[: T + 1]
        x[row], y[row] = repeated[:-1], repeated[1:]
    return x, y


@torch.no_grad()
def evaluate(
    model: GPT,
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    n_batches: int = 10,
    seed: int = 0,
) -> float:
    """Mean loss of model on n_batches random windows of data, the same windows for the same seed.

    Taught in notebooks/02_first_gpt.ipynb.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, block_size, generator, device)
        losses.append(model(x, targets=y).loss)
    model.train(was_training)
    return float(torch.stack(losses).mean())


class _StopRequest:
    """Turns Ctrl-C into a request to stop after the current step (a second Ctrl-C stops at once,
    except while a checkpoint is being written)."""

    def __init__(self) -> None:
        self.requested = False
        self.saving = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested and not self.saving:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nInterrupted: finishing this step and saving; Ctrl-C again stops now.",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _stop_on_ctrl_c() -> Iterator[_StopRequest]:
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    model: GPT,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    tokenizer: Any = None,
) -> History:
    """Train model on random windows of train_data, evaluating on val_data; return the History.

    Taught in notebooks/02_first_gpt.ipynb.

    With out_dir, a checkpoint (see gptlib/checkpoint.py) is written every
    config.checkpoint_interval steps and at the end; resume=True continues from it and reaches
    the same weights as a run that was never stopped. Ctrl-C finishes the current step, saves a
    checkpoint and returns the history so far. The batches come from a torch.Generator seeded
    with config.seed, and torch's global seed is set from it too (dropout), so a run is
    reproducible.
    """
    config = config or TrainConfig()
    block_size = config.block_size or model.config.block_size
    if block_size > model.config.block_size and model.config.position == "learned":
        raise ValueError(
            f"TrainConfig.block_size={block_size} is longer than the model's "
            f"block_size={model.config.block_size}; lower it or make a bigger model"
        )
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if not isinstance(data, torch.Tensor) or data.dim() != 1 or len(data) <= block_size:
            raise ValueError(
                f"{name} must be a 1-D tensor of more than block_size={block_size} "
                "token ids, e.g. torch.tensor(tokenizer.encode(text))"
            )
    device = torch.device(config.device)
    model.to(device)
    optimizer = model.configure_optimizer(config.lr, config.weight_decay, config.betas)
    generator = torch.Generator().manual_seed(config.seed)
    history, step = History(), 0
    out = Path(out_dir) if out_dir is not None else None
    if resume:
        if out is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        if not ckpt.has_checkpoint(out):
            raise FileNotFoundError(
                f"{out} holds no checkpoint to resume; train without resume (--resume) first"
            )
        ckpt.check_resumable(out, model.config, config.to_dict(), tokenizer)
        model.load_state_dict(GPT.load(out, map_location=device).state_dict())
        step = ckpt.load_train_state(out, optimizer, generator)
        history = History.from_dict(ckpt.read_json(out / ckpt.HISTORY_FILE))
        history.truncate(step)
    else:
        if out is not None and ckpt.has_checkpoint(out):
            raise FileExistsError(
                f"{out} already holds a checkpoint; pass resume=True (--resume) "
                "to continue it, or choose a new out_dir"
            )
        torch.manual_seed(config.seed)

    def save(stop: _StopRequest) -> None:
        stop.saving = True
        out.mkdir(parents=True, exist_ok=True)
        model.save(out)  # first the files that may change, train_state last (see checkpoint.py)
        if tokenizer is not None:
            ckpt.save_tokenizer(tokenizer, out / ckpt.TOKENIZER_FILE)
        ckpt.write_json(out / ckpt.TRAIN_CONFIG_FILE, config.to_dict())
        ckpt.write_json(out / ckpt.HISTORY_FILE, history.to_dict())
        ckpt.save_train_state(out, optimizer, generator, step)
        stop.saving = False

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not progress,
        mininterval=0.5,
    )
    seconds_before, start = history.seconds, time.perf_counter()
    model.train()
    with _stop_on_ctrl_c() as stop:
        while step < config.max_steps and not stop.requested:
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(train_data, config.batch_size, block_size, generator, device)
            x, y = repeat_passages(x, y, config.repeat_fraction, generator)
            loss = model(x, targets=y).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
            optimizer.step()
            step += 1
            for name, value in (
                ("steps", step),
                ("train_loss", loss.item()),
                ("lr", lr),
                ("grad_norm", norm.item()),
            ):
                getattr(history, name).append(value)
            history.seconds = seconds_before + time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}", refresh=False)
            if step % config.eval_interval == 0 or step == config.max_steps:
                args = (config.batch_size, block_size, config.eval_batches)
                history.eval_steps.append(step)
                history.val_loss.append(evaluate(model, val_data, *args, seed=config.seed + 1))
                history.eval_train_loss.append(
                    evaluate(model, train_data, *args, seed=config.seed + 2)
                )
                if progress:
                    bar.write(
                        f"step {step}: train loss {history.eval_train_loss[-1]:.4f}, "
                        f"val loss {history.val_loss[-1]:.4f}, lr {lr:.2e}"
                    )
            if out is not None and (
                step % config.checkpoint_interval == 0 or step == config.max_steps
            ):
                save(stop)
        if stop.requested and out is not None and step < config.max_steps:
            save(stop)
    bar.close()
    if stop.requested:
        where = f"; the checkpoint in {out} continues with resume=True" if out is not None else ""
        print(f"Stopped by Ctrl-C after step {step}{where}.", file=sys.stderr)
    return history


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[GPT, Any, History]:
    """Load a checkpoint folder written by `train`: (model in eval mode, tokenizer or None, history).

    Taught in notebooks/02_first_gpt.ipynb; chapter 15 (attention maps) uses it too.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no checkpoint folder at {path}; train one with python -m gptlib.train"
        )
    model = GPT.load(path, map_location=map_location)
    tok_path = path / ckpt.TOKENIZER_FILE
    tokenizer = ckpt.load_tokenizer(tok_path) if tok_path.is_file() else None
    hist_path = path / ckpt.HISTORY_FILE
    history = History.from_dict(ckpt.read_json(hist_path)) if hist_path.is_file() else History()
    return model, tokenizer, history


def main(argv: Sequence[str] | None = None) -> History:
    """Run the command line `python -m gptlib.train` (options: `--help`; see gptlib/train_cli.py).

    Taught in notebooks/02_first_gpt.ipynb.
    """
    from .train_cli import run

    return run(argv)


if __name__ == "__main__":
    main()
