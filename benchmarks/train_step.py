"""Time one training step of gptlib's GPT against transformers' GPT2LMHeadModel.

Run from the repository root:  python benchmarks/train_step.py
(options: --vocab-size 512 50257 --batch-size 8 --seq-len 128 --repeats 9 --threads 1
--clock cpu --device cpu; see --help)

With --device cuda the table also has bfloat16 rows (both models under torch.autocast, as
`python -m gptlib.train --dtype bfloat16` trains) and a column of model FLOPs utilisation: the
FLOPs of a training token, 6N + 12·L·T·d (Chowdhery et al. 2022, Appendix B; see
gptlib/throughput.py), times tokens per second, over the GPU's bfloat16 peak
(gptlib.throughput.PEAK_FLOPS; --peak-tflops for a GPU that table does not know).

A step is forward + cross-entropy loss + backward + AdamW update on a random batch of token
ids. Both models are built from the same sizes (4 layers, 4 heads, d=128 by default) with
random weights and the same dropout (0 by default); both optimisers are
torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True). The two models run
in alternating order and the table gives medians. With --clock cpu (the default) a run is
timed in CPU seconds of this process, which time spent waiting for a core held by other
programs does not inflate.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    add_common_args,
    build_models,
    median,
    print_table,
    setup,
    time_interleaved,
)
from gptlib.throughput import flops_per_token, peak_flops  # noqa: E402


def time_steps(
    args: argparse.Namespace, vocab_size: int, device: torch.device, dtype: str = "float32"
) -> tuple[dict[str, list[float]], float]:
    """Seconds per training step of each model at one vocabulary size and autocast dtype, and
    the training FLOPs of one token."""
    ours, theirs = build_models(args, vocab_size, args.seq_len, device)
    flops = flops_per_token(ours, args.seq_len)
    autocast = (
        torch.autocast(device.type, dtype=getattr(torch, dtype))
        if dtype != "float32"
        else contextlib.nullcontext()
    )
    ours.train()
    theirs.train()
    batch = torch.randint(0, vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    # fused=True: one kernel updates every parameter (transformers' Trainer defaults to it too)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=args.lr, fused=True)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=args.lr, fused=True)

    def step_ours() -> None:
        opt_ours.zero_grad(set_to_none=True)
        with autocast:
            loss = ours(inputs, targets).loss
        loss.backward()
        opt_ours.step()

    def step_theirs() -> None:
        # transformers shifts the labels inside its loss, so it gets the inputs as labels.
        opt_theirs.zero_grad(set_to_none=True)
        with autocast:
            loss = theirs(input_ids=inputs, labels=inputs).loss
        loss.backward()
        opt_theirs.step()

    runs = {"gptlib": step_ours, "transformers": step_theirs}
    return time_interleaved(runs, args.repeats, args.warmup, device, args.clock), flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bfloat16 peak, for MFU")
    parser.set_defaults(repeats=9)
    args = parser.parse_args()
    device = setup(args)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device)
    print(
        f"training step: batch {args.batch_size} x {args.seq_len} tokens, {args.n_layer} layers, "
        f"{args.n_head} heads, d={args.n_embd}, dropout {args.dropout}, fused AdamW lr {args.lr}; "
        f"median of {args.repeats} after {args.warmup} warm-up step(s)\n"
    )
    rows = []
    tokens = args.batch_size * args.seq_len
    dtypes = ["float32", "bfloat16"] if device.type == "cuda" else ["float32"]
    for vocab_size in args.vocab_size:
        for dtype in dtypes:
            times, flops = time_steps(args, vocab_size, device, dtype)
            ref = median(times["transformers"])
            for name, ts in times.items():
                t = median(ts)
                spread = f"{min(ts) * 1000:.0f}-{max(ts) * 1000:.0f}"
                mfu = f"{tokens / t * flops / peak:.1%}" if peak else "n/a"
                row = [name, dtype, str(vocab_size), f"{t * 1000:.1f}", f"{tokens / t:,.0f}"]
                rows.append([*row, f"{ref / t:.2f}x", mfu, spread])
    header = ["model", "dtype", "vocab", "ms/step", "tokens/s", "vs transformers", "MFU"]
    print_table([*header, "range ms"], rows)
    if not peak:
        print("\nMFU: n/a (no GPU peak known here; it is printed on CUDA, see --peak-tflops)")


if __name__ == "__main__":
    main()
