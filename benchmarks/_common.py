"""Shared helpers for benchmarks/train_step.py and benchmarks/generate.py.

Both scripts build gptlib's GPT and transformers' GPT2LMHeadModel from the same sizes, time
them in alternating order (so a burst of load from other work on the machine hits both
sides alike), and print medians in a small table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gptlib import GPT, GPTConfig


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: sizes, threads, device, repeats."""
    parser.add_argument(
        "--vocab-size",
        type=int,
        nargs="+",
        default=[512, 50257],
        help="one row per vocabulary size (512: the book's small BPE; 50257: GPT-2's)",
    )
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0, help="the same on both models")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model first")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (fixed for every model)"
    )
    parser.add_argument(
        "--hf-activation",
        default="gelu_new",
        help="transformers' activation_function: gelu_new (its GPT-2 default, tanh-GELU written "
        "as Python tensor ops) or gelu_pytorch_tanh (the same function as one fused kernel, "
        "as gptlib uses)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: CPU seconds of this process (time.process_time), which time spent waiting "
        "for a core that other programs hold does not inflate; wall: elapsed seconds. "
        "--device cuda always uses wall",
    )
    parser.add_argument("--seed", type=int, default=0)


def setup(args: argparse.Namespace) -> torch.device:
    """Fix threads and seed, silence transformers' config chatter, print the conditions."""
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.device == "cuda":
        args.clock = "wall"
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"torch {torch.__version__} | transformers {transformers.__version__} | "
        f"python {platform.python_version()}"
    )
    print(
        f"device {device} ({name or platform.machine()}) | CPU cores {os.cpu_count()} | "
        f"torch threads {torch.get_num_threads()} | 1-minute load average "
        f"{os.getloadavg()[0]:.1f} | clock {args.clock}"
    )
    print(f"transformers GPT-2 activation_function: {args.hf_activation}")
    return device


def build_models(
    args: argparse.Namespace, vocab_size: int, block_size: int, device: torch.device
) -> tuple[GPT, torch.nn.Module]:
    """gptlib's GPT-2 preset and transformers' GPT2LMHeadModel at the same sizes, random weights.

    Both use tanh-GELU (by default transformers' "gelu_new", its GPT-2 default), LayerNorm
    eps 1e-5, tied embeddings, the same dropout everywhere, and PyTorch's
    scaled_dot_product_attention.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    config = GPTConfig.from_preset(
        "gpt2",
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        block_size=block_size,
        vocab_size=vocab_size,
        dropout=args.dropout,
    )
    ours = GPT(config).to(device)
    hf_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        activation_function=args.hf_activation,
        # No end-of-text token: neither model checks for one, so both always generate in full.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    theirs = GPT2LMHeadModel(hf_config).to(device)
    return ours, theirs


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds of each run, `repeats` times, alternating the order between rounds.

    clock="wall" measures elapsed time, "cpu" this process's CPU time. Every run gets `warmup`
    untimed calls first. Round r times the runs in order when r is even and in reverse when
    r is odd, so slow drift in the machine's load averages out.
    """
    timer = time.process_time if clock == "cpu" else time.perf_counter
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            synchronize(device)
            start = timer()
            runs[name]()
            synchronize(device)
            times[name].append(timer() - start)
    return times


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A plain-text table with right-aligned columns (the first column left-aligned)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def median(values: list[float]) -> float:
    """The median of a list of timings."""
    return statistics.median(values)
