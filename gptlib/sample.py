"""The command line `python -m gptlib.sample`: continue a prompt with a trained checkpoint.

What notebooks/02_first_gpt.ipynb does by hand with a checkpoint, with the sampling settings
that notebooks/08_gpt2.ipynb teaches (temperature, top-k, top-p), as one command (README's
"Train your own")::

    python -m gptlib.sample --checkpoint runs/mine --prompt "The " --max-new-tokens 200

It loads the folder with `gptlib.train.load_checkpoint` (model and tokenizer), encodes the
prompt, calls `GPT.generate` and prints each continuation, prompt included.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from .checkpoint import load_checkpoint
from .distributed import resolve_device

__all__ = ["main", "sample"]


def sample(
    checkpoint: str,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> list[str]:
    """Continuations of prompt by the checkpoint's model, one string per sample (prompt first).

    temperature 0 is greedy; top_k and top_p restrict sampling to the most likely tokens (see
    `gptlib.sampling`). The same seed gives the same samples. Raises ValueError for a prompt
    the tokenizer cannot encode or a checkpoint without a tokenizer.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    target = resolve_device(device)
    model, tokenizer, _ = load_checkpoint(checkpoint, map_location=target)
    if tokenizer is None:
        raise ValueError(f"{checkpoint} holds no tokenizer.json, so a prompt cannot be encoded")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty; give at least one character with --prompt")
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=target)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed)  # fmt: skip
    return [tokenizer.decode(row.tolist()) for row in out]


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Run `python -m gptlib.sample` (see `--help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m gptlib.sample",
        description="Print continuations of a prompt by a checkpoint that python -m gptlib.train "
        "wrote.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a folder written by gptlib.train")
    parser.add_argument("--prompt", default="\n", help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add")
    parser.add_argument("--temperature", type=float, default=0.8, help="0: always the likeliest")
    parser.add_argument("--top-k", type=int, help="sample among the k likeliest tokens only")
    parser.add_argument("--top-p", type=float, help="sample among the likeliest mass p only")
    parser.add_argument("--num-samples", type=int, default=1, help="continuations to print")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, the same samples")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    args = parser.parse_args(argv)
    try:
        texts = sample(args.checkpoint, args.prompt, args.max_new_tokens, args.temperature,
                       args.top_k, args.top_p, args.num_samples, args.seed, args.device)  # fmt: skip
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"----- sample {i + 1} -----")
        print(text)
    return texts


if __name__ == "__main__":
    main()
