"""The command line `python -m gptlib.train`: corpus, tokenizer and model from flags, then train.

Taught in notebooks/02_first_gpt.ipynb. `gptlib.train.main` calls `run`; everything it does is
also available from Python through `gptlib.train.train`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import GPTConfig
from .data import load_corpus, split
from .model import GPT
from .train import History, TrainConfig, train


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gptlib.train",
        description="Train a small GPT on one of gptlib's offline corpora, with a progress bar, "
        "periodic evaluation, atomic checkpoints and --resume.",
    )
    p.add_argument("--out", required=True, help="checkpoint folder, e.g. data/checkpoints/NAME")
    p.add_argument(
        "--preset", default="gpt2", help=f"model family: {', '.join(GPTConfig.presets())}"
    )
    p.add_argument("--corpus", default="python-docs", help="python-docs, python-stdlib or stories")
    p.add_argument("--max-chars", type=int, help="use only the first N characters of the corpus")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share kept for validation")
    p.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size")
    for flag, default in (
        ("--n-layer", 4),
        ("--n-head", 4),
        ("--n-embd", 128),
        ("--block-size", 128),
    ):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--position", help="override the preset's positions: learned, rotary, alibi ...")
    defaults = TrainConfig()
    p.add_argument("--max-steps", type=int, default=defaults.max_steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--min-lr", type=float, help="end of the cosine (default: lr / 10)")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="0: no clipping")
    p.add_argument("--eval-interval", type=int, default=defaults.eval_interval)
    p.add_argument("--eval-batches", type=int, default=defaults.eval_batches)
    p.add_argument("--checkpoint-interval", type=int, help="default: every evaluation")
    p.add_argument(
        "--repeat-fraction",
        type=float,
        default=0.0,
        help="share of training windows that repeat a passage (makes induction heads form)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument(
        "--final-weights-only",
        action="store_true",
        help="after the last step delete the optimizer state (smaller; no more --resume)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or evaluation lines")
    return p


def run(argv: Sequence[str] | None = None) -> History:
    """Build tokenizer, data and model from command-line arguments, then `train`.

    Taught in notebooks/02_first_gpt.ipynb. Run `python -m gptlib.train --help` for the options.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        text = load_corpus(args.corpus, args.max_chars)
        if args.tokenizer == "char":
            from .tokenizers import CharTokenizer

            tokenizer = CharTokenizer.from_text(text)
        else:
            from .tokenizers import BPETokenizer

            tokenizer = BPETokenizer.train(text, args.vocab_size)
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        train_ids, val_ids = split(ids, args.val_fraction)
        model_config = GPTConfig.from_preset(
            args.preset,
            n_layer=args.n_layer,
            n_head=args.n_head,
            n_embd=args.n_embd,
            block_size=args.block_size,
            dropout=args.dropout,
            **({"position": args.position} if args.position else {}),
            vocab_size=tokenizer.vocab_size,
        )
        config = TrainConfig(
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            min_lr=args.min_lr,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip or None,
            eval_interval=args.eval_interval,
            eval_batches=args.eval_batches,
            checkpoint_interval=args.checkpoint_interval,
            seed=args.seed,
            repeat_fraction=args.repeat_fraction,
            device=args.device,
        )
        torch.manual_seed(args.seed)
        model = GPT(model_config)
        out = Path(args.out)
        if not args.resume and ckpt.has_checkpoint(out):
            raise FileExistsError(
                f"{out} already holds a checkpoint; add --resume to continue it, "
                "or choose a new --out"
            )
        if not args.no_progress:
            print(
                f"{args.corpus}: {len(text):,} characters, {tokenizer!r}, "
                f"{model.num_params():,} parameters, training on {len(train_ids):,} tokens"
            )
        history = train(
            model, train_ids, val_ids, config, out, args.resume, not args.no_progress, tokenizer
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    ckpt.write_json(
        out / "command.json",
        {
            "command": shlex.join(["python", "-m", "gptlib.train", *(argv or sys.argv[1:])]),
            "corpus": args.corpus,
            "max_chars": args.max_chars,
            "val_fraction": args.val_fraction,
        },
    )
    if history.steps and history.steps[-1] < config.max_steps:
        parser.exit(130, "Interrupted; run the same command with --resume to continue.\n")
    if args.final_weights_only:
        (out / ckpt.STATE_FILE).unlink(missing_ok=True)
    if history.val_loss:
        print(
            f"done: {history.steps[-1]} steps in {history.seconds:.0f} s, "
            f"final val loss {history.val_loss[-1]:.4f}; checkpoint in {out}"
        )
    return history
