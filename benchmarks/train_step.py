"""Time one training step of gptlib's GPT against transformers' GPT2LMHeadModel.

Run from the repository root:  python benchmarks/train_step.py
(options: --vocab-size 512 50257 --batch-size 8 --seq-len 128 --repeats 9 --threads 1
--clock cpu --device cpu; see --help)

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


def time_steps(
    args: argparse.Namespace, vocab_size: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per training step of each model at one vocabulary size."""
    ours, theirs = build_models(args, vocab_size, args.seq_len, device)
    ours.train()
    theirs.train()
    batch = torch.randint(0, vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    # fused=True: one kernel updates every parameter (transformers' Trainer defaults to it too)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=args.lr, fused=True)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=args.lr, fused=True)

    def step_ours() -> None:
        opt_ours.zero_grad(set_to_none=True)
        ours(inputs, targets).loss.backward()
        opt_ours.step()

    def step_theirs() -> None:
        # transformers shifts the labels inside its loss, so it gets the inputs as labels.
        opt_theirs.zero_grad(set_to_none=True)
        theirs(input_ids=inputs, labels=inputs).loss.backward()
        opt_theirs.step()

    runs = {"gptlib": step_ours, "transformers": step_theirs}
    return time_interleaved(runs, args.repeats, args.warmup, device, args.clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.set_defaults(repeats=9)
    args = parser.parse_args()
    device = setup(args)
    print(
        f"training step: batch {args.batch_size} x {args.seq_len} tokens, {args.n_layer} layers, "
        f"{args.n_head} heads, d={args.n_embd}, dropout {args.dropout}, fused AdamW lr {args.lr}; "
        f"median of {args.repeats} after {args.warmup} warm-up step(s)\n"
    )
    rows = []
    tokens = args.batch_size * args.seq_len
    for vocab_size in args.vocab_size:
        times = time_steps(args, vocab_size, device)
        ref = median(times["transformers"])
        for name, ts in times.items():
            t = median(ts)
            spread = f"{min(ts) * 1000:.0f}-{max(ts) * 1000:.0f}"
            row = [name, str(vocab_size), f"{t * 1000:.1f}", f"{tokens / t:,.0f}"]
            rows.append([*row, f"{ref / t:.2f}x", spread])
    print_table(["model", "vocab", "ms/step", "tokens/s", "vs transformers", "range ms"], rows)


if __name__ == "__main__":
    main()
