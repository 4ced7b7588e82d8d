"""Data-parallel training with PyTorch's own engine: torch.distributed and DDP, under torchrun.

Taught in README.md's "Train your own" (no chapter trains on several processes; the book's
runs fit one CPU). `torchrun --standalone --nproc_per_node=N -m gptlib.train ...` starts N
copies of the training command with RANK, WORLD_SIZE and LOCAL_RANK set; `Distributed.start`
joins them in one process group (NCCL between GPUs, gloo on CPUs) and `gptlib.train.train`
wraps the model in `torch.nn.parallel.DistributedDataParallel` (Li et al. 2020), which
averages the gradients of all processes during the backward pass.

How the batch is shared keeps a run's numbers independent of the number of processes: every
process draws the whole global batch (batch per process x processes x gradient-accumulation
steps) from the same seeded generator and keeps its own rows (`my_rows`), so 1 and N processes
train on the same sequences. Process 0 alone writes checkpoints, logs and the progress bar;
`Distributed.from_main` runs a step there and gives its result, or its error, to every
process, so that no process waits forever for one that has failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Distributed", "resolve_device"]

T = TypeVar("T")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for a name: "auto" picks CUDA, then Apple's MPS, then the CPU.

    Under torchrun each process takes the GPU numbered by its LOCAL_RANK. Raises ValueError
    for an unknown name and RuntimeError for a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA GPU; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' asked for, but this machine has no MPS; use cpu")
    return device


@dataclass
class Distributed:
    """This process's place in a data-parallel run: rank, number of processes, local GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when `start` created the process group (and `close` ends it)

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, the one that writes files and prints."""
        return self.rank == 0

    @classmethod
    def start(cls, device: torch.device) -> Distributed:
        """Join the process group torchrun prepared (WORLD_SIZE > 1), or run alone."""
        if not dist.is_available() or (
            int(os.environ.get("WORLD_SIZE", "1")) == 1 and not dist.is_initialized()
        ):
            return cls(device=device)
        owns = not dist.is_initialized()
        if owns:
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(
                backend=backend, device_id=device if backend == "nccl" else None
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)

    def close(self) -> None:
        """Leave the process group if `start` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all processes, in place (nothing to do alone)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every process's obj, in rank order."""
        if self.world_size == 1:
            return [obj]
        objects: list[Any] = [None] * self.world_size
        dist.all_gather_object(objects, obj)
        return objects

    def from_main(self, work: Callable[[], T]) -> T:
        """Run work on process 0 and return its result on every process.

        If work raises, process 0 re-raises the exception and every other process raises a
        RuntimeError with its message, so that all stop instead of waiting for each other.
        """
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # every process must learn of it before anyone raises
                error = err
        if self.world_size > 1:
            message = f"{type(error).__name__}: {error}" if error is not None else None
            shared = [result if self.is_main else None, message]
            dist.broadcast_object_list(shared, src=0)
            result, message = shared
            if message is not None and not self.is_main:
                raise RuntimeError(f"process 0 failed: {message}")
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    def my_rows(self, rows_per_process: int) -> slice:
        """The rows of the global batch that this process trains on."""
        return slice(self.rank * rows_per_process, (self.rank + 1) * rows_per_process)

    def micro_batches(
        self, x: torch.Tensor, y: torch.Tensor, micro_size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """This process's micro-batches of a global batch (x, y), each with its loss weight.

        The weight of a micro-batch is its share of the global batch's targets that are not
        ignored (y >= 0), so that the weighted losses of all micro-batches of all processes sum
        to the mean loss over the whole global batch, however it is split. Raises ValueError
        if every target of the global batch is ignored (its mean loss does not exist).
        """
        n_total = int((y >= 0).sum())
        if n_total == 0:
            raise ValueError(
                "every target of a batch is ignored (-1 or -100), so its loss is undefined; "
                "a batch source must leave some positions to predict"
            )
        rows = len(x) // self.world_size
        mine = self.my_rows(rows)
        x, y = x[mine], y[mine]
        return [
            (
                x[i : i + micro_size],
                y[i : i + micro_size],
                int((y[i : i + micro_size] >= 0).sum()) / n_total,
            )
            for i in range(0, rows, micro_size)
        ]
