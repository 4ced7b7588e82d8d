"""Training: AdamW, warmup then cosine decay, evaluation, a progress bar, checkpoints and resume.

Taught in notebooks/02_first_gpt.ipynb; every later chapter that trains a model uses `train`.

From Python::

    history = train(model, train_ids, val_ids, TrainConfig(max_steps=500), out_dir="runs/x")

From a terminal (the checkpoints in data/checkpoints were made this way)::

    python -m gptlib.train --corpus python-docs --out runs/char --n-layer 4 --max-steps 2000
    torchrun --standalone --nproc_per_node=8 -m gptlib.train --tokens data/mine --preset gpt2 ...

The same loop runs alone or data-parallel under torchrun (`gptlib.distributed`), with gradient
accumulation, autocast to bfloat16 or float16 (with a loss scaler for float16, Micikevicius et
al. 2018) and torch.compile. Checkpoints survive kills (`gptlib.checkpoint`); a resumed run
continues exactly (`gptlib.train_state`); a loss that stops being finite ends the run without
touching the last good checkpoint (`DivergedError`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from . import train_state
from .checkpoint import load_checkpoint
from .data import BatchSource, as_batch_source, check_batch, repeat_passages
from .distributed import Distributed, resolve_device
from .model import GPT
from .run_tokenizer import tokenizer_vocab_size
from .throughput import Throughput
from .train_config import DTYPES, DivergedError, History, TrainConfig

__all__ = [
    "TRACKERS",
    "DivergedError",
    "History",
    "TrainConfig",
    "evaluate",
    "load_checkpoint",
    "lr_at",
    "main",
    "train",
]


def _induction(model: GPT) -> dict[str, float]:
    from .interpret import induction_probe

    return induction_probe(model)


# Metrics that `train` can record at each evaluation (TrainConfig.track, --track NAME): a
# function of the model returning named floats, stored in History.tracked as "NAME/key". It
# runs in eval mode without gradients, and any random numbers it draws are put back.
TRACKERS: dict[str, Callable[[GPT], dict[str, float]]] = {"induction": _induction}


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


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@torch.no_grad()
def _mean_loss(model: GPT, source: BatchSource, n_batches: int, seed: int, batch: int,
               micro: int, block_size: int, dist: Distributed, dtype: str = "float32") -> float:  # fmt: skip
    """Mean loss over n_batches global batches drawn with seed, shared among the processes."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = torch.zeros(n_batches, device=device)
    for i in range(n_batches):
        x, y = check_batch(source.get_batch(batch, block_size, generator, "cpu"), batch,
                           block_size, source)  # fmt: skip
        for xb, yb, weight in dist.micro_batches(x, y, micro):
            if weight:
                with _autocast(device, dtype):
                    loss = model(xb.to(device), targets=yb.to(device)).loss
                losses[i] += loss.float() * weight
    model.train(was_training)
    return float(dist.sum(losses).mean())


def evaluate(
    model: GPT,
    data: torch.Tensor | BatchSource,
    batch_size: int,
    block_size: int,
    n_batches: int = 10,
    seed: int = 0,
) -> float:
    """Mean loss of model on n_batches random windows of data, the same windows for the same seed.

    Taught in notebooks/02_first_gpt.ipynb. data is a 1-D tensor of token ids, a memory-mapped
    token file or any `gptlib.data.BatchSource`; ignored targets do not count.
    """
    source = as_batch_source(data, "data")
    return _mean_loss(model, source, n_batches, seed, batch_size, batch_size, block_size,
                      Distributed())  # fmt: skip


class _StopRequest:
    """Turns Ctrl-C or SIGTERM into a request to stop after the current step (a second Ctrl-C
    stops at once, except while a checkpoint is being written)."""

    def __init__(self, verbose: bool) -> None:
        self.requested, self.saving, self.verbose, self.signal_name = False, False, verbose, ""

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested and not self.saving:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.verbose:
            print(
                f"\n{self.signal_name}: finishing this step and saving; Ctrl-C again stops now.",
                file=sys.stderr,
            )


@contextlib.contextmanager
def _stop_on_signals(verbose: bool) -> Iterator[_StopRequest]:
    stop = _StopRequest(verbose)
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(
    model: GPT,
    train_data: torch.Tensor | BatchSource,
    val_data: torch.Tensor | BatchSource,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    tokenizer: Any = None,
    extra_files: dict[str, Any] | None = None,
) -> History:
    """Train model on random windows of train_data, evaluating on val_data; return the History.

    Taught in notebooks/02_first_gpt.ipynb.

    train_data and val_data are 1-D tensors of token ids, memory-mapped token files
    (`gptlib.prepare.open_tokens`) or any `gptlib.data.BatchSource`. With out_dir, a
    checkpoint (see gptlib/checkpoint.py) is written every config.checkpoint_interval steps
    and at the end; resume=True continues from it and reaches the same weights as a run that
    was never stopped. Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and
    returns the history so far. Under torchrun the run is data-parallel (gptlib/distributed.py)
    and gives the same losses as one process with the same global batch. The batches come
    from a torch.Generator seeded with config.seed, and torch's global seed is set from it too
    (dropout), so a run is reproducible. Raises DivergedError when the loss stops being finite,
    RuntimeError when another run holds out_dir, PermissionError when out_dir is read-only, and,
    before the first step, TypeError or ValueError for a model that is not a float32 `GPT` with
    trainable weights (autocast: config.dtype), a model `GPT.save` would refuse, a batch source
    that returns the wrong thing, or, on resume, data other than the checkpoint's.
    extra_files maps file names to JSON data saved with every checkpoint (the command line
    writes command.json this way).
    """
    _check_model_and_config(model, config, out_dir)
    config = config or TrainConfig()
    block_size = config.block_size or model.config.block_size
    if block_size > model.config.block_size and model.config.position == "learned":
        raise ValueError(
            f"TrainConfig.block_size={block_size} is longer than the model's "
            f"block_size={model.config.block_size}; lower it or make a bigger model"
        )
    sources = [as_batch_source(d, n, block_size) for d, n in ((train_data, "train_data"), (val_data, "val_data"))]  # fmt: skip
    if tokenizer is not None and tokenizer_vocab_size(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer_vocab_size(tokenizer)} ids but the model's vocab_size "
            f"is {model.config.vocab_size}; build the model with vocab_size=tokenizer.vocab_size"
        )
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    dist = Distributed.start(device)
    run = _Run(model, config, block_size, dist, tokenizer, out_dir, extra_files)
    run.data = {"train": train_state.data_fingerprint(sources[0]),
                "val": train_state.data_fingerprint(sources[1])}  # fmt: skip
    try:
        if resume and run.out is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        manifest = None
        if run.out is not None:
            resume, manifest = dist.from_main(
                lambda: ckpt.open_run_folder(run.out, resume, run.lock)
            )
        run.start(resume, manifest)
        return run.loop(*sources, progress)
    finally:
        for held in run.lock:
            held.release()
        # Free DDP's Reducer while the process group still exists: freed afterwards (when this
        # frame's objects go), its gloo group's destructor joins a thread that waits for the
        # GIL the freeing thread holds, and the process never exits.
        run.step_model = run.model
        gc.collect()
        dist.close()


def _check_model_and_config(model: Any, config: Any, out_dir: Any) -> None:
    """Refuse, before any step, what would fail later or train wrongly (see `train`)."""
    if not isinstance(model, GPT):
        raise TypeError(f"train takes a gptlib GPT model, got {type(model).__name__}")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(
            f"config must be a TrainConfig, got {type(config).__name__}; for a dict of settings "
            "use TrainConfig(**settings)"
        )
    parameters = list(model.parameters())
    if not any(p.requires_grad for p in parameters):
        raise ValueError("no weight of the model requires a gradient, so there is nothing to train")
    reduced = sorted(
        {str(p.dtype) for p in parameters if p.dtype in (torch.float16, torch.bfloat16)}
    )
    if reduced:
        raise ValueError(
            f"the model's weights are {', '.join(reduced)}: AdamW's small updates are lost on "
            "16-bit weights (float16 underflows and diverges). Keep float32 weights "
            "(model.float()) and compute in reduced precision with TrainConfig(dtype='bfloat16' "
            "or 'float16'), which autocasts"
        )
    if out_dir is not None:
        model._check_saveable()  # now, not at the first checkpoint after a whole interval


class _Run:
    """One run's state (model and its wrappers, optimizer, loss scaler, batch generator,
    history, step) and what it does: start or resume, take a step, evaluate, save."""

    def __init__(self, model, config, block_size, dist, tokenizer, out_dir, extra_files) -> None:  # fmt: skip
        self.model, self.config, self.block_size, self.dist = model, config, block_size, dist
        self.tokenizer, self.extra_files = tokenizer, extra_files or {}
        self.out = Path(out_dir) if out_dir is not None else None
        self.device = device = dist.device
        self.lock: list[ckpt.FolderLock] = []
        model.to(device)
        self.optimizer = model.configure_optimizer(config.lr, config.weight_decay, config.betas)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.dtype == "float16")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history, self.step, self.last_saved = History(), 0, None
        self.data: dict[str, Any] = {}  # fingerprints of the training and validation tokens
        self.global_batch = config.batch_size * config.grad_accum_steps * dist.world_size
        self.environment = train_state.environment(device, config.to_dict(), dist.world_size)

    def start(self, resume: bool, manifest: dict | None) -> None:
        """Seed a fresh run, or restore the checkpoint in out (its manifest verified, or None
        for a checkpoint older than manifests); then wrap the model for compile and DDP."""
        model, config, dist = self.model, self.config, self.dist
        if resume:
            out = self.out
            train_state.check_resumable(out, model.config, config.to_dict(), self.tokenizer,
                                        dist.world_size, manifest, self.data)  # fmt: skip
            model.load_state_dict(GPT.load(out, map_location=self.device).state_dict())
            self.step, known = train_state.load_train_state(
                out, self.optimizer, self.generator, dist.rank, self.scaler
            )
            if not known:  # a process the checkpoint did not have: a fresh dropout stream
                torch.manual_seed(config.seed + dist.rank + 1_000_003 * self.step)
            self.history = History.from_dict(ckpt.read_json(out / ckpt.HISTORY_FILE))
            self.history.truncate(self.step)
            self.last_saved = self.step
            saved = (manifest or {}).get("environment")
            changes = train_state.environment_changes(saved, self.environment)
            if changes and dist.is_main:
                warnings.warn(
                    f"resuming {out} under other conditions than it was saved with "
                    f"({'; '.join(changes)}): the run continues, but not bit for bit as if it "
                    "had never stopped",
                    RuntimeWarning,
                    stacklevel=4,
                )
        else:
            torch.manual_seed(config.seed + dist.rank)
        self.step_model = torch.compile(model) if config.compile else model
        if dist.world_size > 1:
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.step_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=model.config.mlp == "moe",  # unchosen experts: no grad
            )

    def train_step(self, source: BatchSource, stop: _StopRequest) -> float:
        """One optimizer step on one global batch; returns its loss (mean over its targets)."""
        config, dist, device = self.config, self.dist, self.device
        lr = lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = source.get_batch(self.global_batch, self.block_size, self.generator, "cpu")
        x, y = check_batch(batch, self.global_batch, self.block_size, source)
        x, y = repeat_passages(x, y, config.repeat_fraction, self.generator)
        self.step_tokens = x.numel()  # the global batch's tokens; a source may send < block_size
        total = torch.zeros(2, device=device)  # this process's share of the loss; stop flag
        micro_batches = dist.micro_batches(x, y, config.batch_size)
        for i, (xb, yb, weight) in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1 or dist.world_size == 1
            with contextlib.nullcontext() if sync else self.step_model.no_sync():
                with _autocast(device, config.dtype):
                    output = self.step_model(xb.to(device), targets=yb.to(device))
                loss = output.loss * weight if weight else output.logits.float().sum() * 0.0
                self.scaler.scale(loss * dist.world_size).backward()  # DDP averages: x processes
            total[0] += loss.detach().float()
        total[1] = float(stop.requested)  # a signal to any process stops them all
        loss_value, stop_flag = dist.sum(total).tolist()
        stop.requested = stop_flag > 0
        if not math.isfinite(loss_value):
            raise DivergedError(self._diverged("the loss", self.step + 1), self.history)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            raise DivergedError(self._diverged("the gradient", self.step + 1), self.history)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        for name, value in (("steps", self.step), ("train_loss", loss_value), ("lr", lr),
                            ("grad_norm", norm.item())):  # fmt: skip
            getattr(self.history, name).append(value)
        return loss_value

    def evaluate(self, val_source: BatchSource, train_source: BatchSource) -> None:
        """Record validation and training loss on fixed batches, and the tracked metrics."""
        config, history = self.config, self.history
        settings = (config.eval_batches, self.global_batch, config.batch_size, self.block_size,
                    self.dist, config.dtype)  # fmt: skip
        history.eval_steps.append(self.step)
        history.val_loss.append(_mean_loss(self.model, val_source, settings[0], config.seed + 1, *settings[1:]))  # fmt: skip
        history.eval_train_loss.append(_mean_loss(self.model, train_source, settings[0], config.seed + 2, *settings[1:]))  # fmt: skip
        if self.dist.is_main:
            _track(self.model, config.track, history, self.device)

    def save(self, stop: _StopRequest) -> None:
        """Write a checkpoint (process 0), never one with weights that are not finite."""
        stop.saving = True
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rng_states = self.dist.gather(rng)
        config, dist = self.config, self.dist

        def write_files(folder: Path) -> None:
            self.model.save(folder)
            ckpt.write_tokenizer(self.tokenizer, folder)
            ckpt.write_json(folder / ckpt.TRAIN_CONFIG_FILE, config.to_dict())
            ckpt.write_json(folder / ckpt.HISTORY_FILE, self.history.to_dict())
            for name, data in self.extra_files.items():
                ckpt.write_json(folder / name, data)
            scaler = self.scaler if self.scaler.is_enabled() else None
            train_state.save_train_state(folder / ckpt.STATE_FILE, self.optimizer,
                                         self.generator, self.step, rng_states, scaler)  # fmt: skip

        def commit() -> None:
            if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                raise DivergedError(self._diverged("the weights", self.step), self.history)
            vocab = tokenizer_vocab_size(self.tokenizer) if self.tokenizer is not None else None
            ckpt.commit(self.out, write_files, {
                "step": self.step, "world_size": dist.world_size, "batch_size": config.batch_size,
                "grad_accum_steps": config.grad_accum_steps,
                "global_batch_size": self.global_batch,
                "tokens_per_step": self.global_batch * self.block_size,
                "environment": self.environment,
                "not_exact": train_state.not_exact(self.device, config.to_dict(),
                                                   dist.world_size, self.model.config.dropout),
                "tokenizer_vocab_size": vocab, "data": self.data,
            })  # fmt: skip

        dist.from_main(commit)
        self.last_saved = self.step
        stop.saving = False

    def _diverged(self, what: str, step: int) -> str:
        kept = (
            f"the checkpoint of step {self.last_saved} in {self.out} is kept"
            if self.last_saved is not None
            else "no checkpoint was written"
        )
        return (
            f"{what} stopped being finite at step {step}: training diverged, so it stops here "
            f"and {kept}. Lower the learning rate (--lr), or clip gradients (--grad-clip 1)"
        )

    def loop(self, train_source: BatchSource, val_source: BatchSource, progress: bool) -> History:
        """Train to max_steps (or a stop signal), evaluating and saving on schedule."""
        from tqdm.auto import tqdm

        config, dist, history = self.config, self.dist, self.history
        verbose = progress and dist.is_main
        bar = tqdm(total=config.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not verbose, mininterval=0.5)  # fmt: skip
        tokens = self.global_batch * self.block_size
        meter = Throughput(self.model, self.block_size, tokens, self.device, dist.world_size)
        seconds_before, start = history.seconds, time.perf_counter()
        self.model.train()
        with _stop_on_signals(dist.is_main) as stop:
            while self.step < config.max_steps and not stop.requested:
                began = time.perf_counter()
                loss = self.train_step(train_source, stop)  # ends with a sync: its loss value
                meter.step(time.perf_counter() - began, self.step_tokens)
                history.seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{history.lr[-1]:.1e}", refresh=False)
                last = self.step == config.max_steps
                if self.step % config.eval_interval == 0 or last:
                    self.evaluate(val_source, train_source)
                    if verbose:
                        bar.write(
                            f"step {self.step}: train loss {history.eval_train_loss[-1]:.4f}, "
                            f"val loss {history.val_loss[-1]:.4f}, lr {history.lr[-1]:.2e}, "
                            f"{meter.report()}"
                        )
                if self.out is not None and (self.step % config.checkpoint_interval == 0 or last):
                    self.save(stop)
            if stop.requested and self.out is not None and self.step < config.max_steps:
                self.save(stop)
        bar.close()
        if stop.requested and dist.is_main:
            where = f"; the checkpoint in {self.out} continues with resume=True" if self.out else ""
            print(f"Stopped by {stop.signal_name} after step {self.step}{where}.", file=sys.stderr)
        return history


def _track(model: GPT, names: Sequence[str], history: History, device: torch.device) -> None:
    """Record each tracker's results, without gradients and leaving the random state as it was."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        for name in names:
            for key, value in TRACKERS[name](model).items():
                history.tracked.setdefault(f"{name}/{key}", []).append(float(value))
    model.train(was_training)


def main(argv: Sequence[str] | None = None) -> History:
    """Run the command line `python -m gptlib.train` (options: `--help`; see gptlib/train_cli.py).

    Taught in notebooks/02_first_gpt.ipynb.
    """
    from .train_cli import run

    return run(argv)


if __name__ == "__main__":
    main()
