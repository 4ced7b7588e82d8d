"""The command line `python -m gptlib.train`: data, tokenizer and model from flags, then train.

Taught in notebooks/02_first_gpt.ipynb. `gptlib.train.main` calls `run`; everything it does is
also available from Python through `gptlib.train.train`.

Data: a built-in corpus (``--corpus``), your own text file or folder (``--text``), or a token
folder made by ``python -m gptlib.prepare`` (``--tokens``, memory-mapped). The model flags
are made from `GPTConfig`'s fields, so every switch of every preset can be set
(``--preset mixtral --n-head 2 --n-kv-head 1``); a flag left out keeps the preset's value,
except the sizes, which default to a laptop-sized model (``--full-size`` keeps the preset's).
``--resume`` continues the run in ``--out`` with the settings it was started with: flags given
again override them, and may change only what `gptlib.train_state` allows.
``--init-from DIR`` starts from another checkpoint's weights and tokenizer (fine-tuning).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import GPTConfig
from .data import CORPORA, load_corpus, split
from .model import GPT
from .prepare import encode_documents, open_tokens, read_documents
from .run_tokenizer import TOKENIZER_KINDS, make_tokenizer
from .train import TRACKERS, DivergedError, History, TrainConfig, train

# Laptop-sized defaults for the size flags (the presets are full-size published models).
LAPTOP_SIZES = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128}
DATA_FLAGS = ("corpus", "text", "tokens", "max_chars", "val_fraction", "tokenizer", "vocab_size")
NOT_MODEL_FLAGS = ("vocab_size", "extra")  # vocab_size comes from the tokenizer


def _model_flag(parser: argparse._ArgumentGroup, name: str, hint: Any) -> None:
    """Add --NAME for one GPTConfig field, typed from its annotation."""
    flag, help_text = "--" + name.replace("_", "-"), f"GPTConfig.{name}; None: the preset's value"
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    default = LAPTOP_SIZES.get(name)
    if default is not None:
        help_text = f"GPTConfig.{name} (laptop size; --full-size: the preset's)"
    if hint is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
    elif hint in (int, float, str):
        parser.add_argument(flag, type=hint, default=default, help=help_text)
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is str:
        parser.add_argument(flag, nargs="+", help=help_text + " (one value per layer, cycled)")
    else:
        raise TypeError(f"GPTConfig.{name} has type {hint!r}, which the command line cannot set")


def _parser(parser_class: type = argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(
        prog="python -m gptlib.train",
        description="Train a GPT on a built-in corpus, your own text, or a prepared token file, "
        "with periodic evaluation, checkpoints that survive kills, and --resume. Run it under "
        "torchrun --standalone --nproc_per_node=N for data-parallel training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="checkpoint folder, e.g. runs/mine")
    data = p.add_argument_group("data (one of --corpus, --text, --tokens)")
    data.add_argument("--corpus", default="python-docs", help=f"built-in: {', '.join(CORPORA)}")
    data.add_argument("--text", help="your own UTF-8 text file, or a folder of text files")
    data.add_argument("--tokens", help="a folder made by python -m gptlib.prepare (memory-mapped)")
    data.add_argument("--max-chars", type=int, help="use only the first N characters of the text")
    data.add_argument("--val-fraction", type=float, default=0.1, help="share kept for validation")
    data.add_argument("--tokenizer", default="char", choices=TOKENIZER_KINDS,
                      help="characters, a BPE trained on the text, or OpenAI's")  # fmt: skip
    data.add_argument("--vocab-size", type=int, default=512, help="vocabulary of --tokenizer bpe")
    model = p.add_argument_group("model (every GPTConfig field)")
    model.add_argument("--preset", default="gpt2", help=", ".join(GPTConfig.presets()))
    model.add_argument("--full-size", action="store_true", help="the preset's own sizes")
    model.add_argument("--init-from", help="start from this checkpoint's weights and tokenizer")
    hints = typing.get_type_hints(GPTConfig)
    for f in dataclasses.fields(GPTConfig):
        if f.name not in NOT_MODEL_FLAGS:
            _model_flag(model, f.name, hints[f.name])
    d = TrainConfig(max_steps=1000)
    run = p.add_argument_group("training")
    run.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps")
    run.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per process")
    run.add_argument("--grad-accum-steps", type=int, default=d.grad_accum_steps,
                     help="micro-batches per optimizer step")  # fmt: skip
    run.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    run.add_argument("--min-lr", type=float, help="end of the cosine; None: lr / 10")
    run.add_argument("--warmup-steps", type=int, help="None: min(100, max_steps // 10)")
    run.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW's")
    run.add_argument("--betas", type=float, nargs=2, default=list(d.betas), help="AdamW's betas")
    run.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0: no clipping")
    run.add_argument("--eval-interval", type=int, default=d.eval_interval, help="steps")
    run.add_argument("--eval-batches", type=int, default=d.eval_batches,
                     help="fixed batches per evaluation")  # fmt: skip
    run.add_argument("--checkpoint-interval", type=int, help="None: at every evaluation")
    run.add_argument("--repeat-fraction", type=float, default=d.repeat_fraction,
                     help="share of windows that repeat a passage (makes induction heads form)")  # fmt: skip
    run.add_argument("--seed", type=int, default=d.seed, help="batches, dropout, init")
    run.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda")
    run.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"],
                     help="autocast dtype (float16 adds loss scaling)")  # fmt: skip
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--track", action="append", default=[], choices=list(TRACKERS),
                     help="a metric recorded at each evaluation (repeatable)")  # fmt: skip
    run.add_argument(
        "--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)"
    )
    run.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    run.add_argument("--final-weights-only", action="store_true",
                     help="after the last step delete the optimizer state (smaller; no more --resume)")  # fmt: skip
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar or evaluation lines"
    )
    return p


def _explicit(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The flags actually given in argv (not their defaults), as {dest: value}."""
    quiet = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
                kwargs["action"] = type(action)
            elif isinstance(action, argparse._AppendAction):
                kwargs.update(action="append")
            else:
                kwargs.update(nargs=action.nargs, type=action.type)
            quiet.add_argument(*action.option_strings, **kwargs)
    return vars(quiet.parse_known_args(argv)[0])


def _settings(argv: list[str]) -> tuple[argparse.Namespace, dict, argparse.Namespace | None, list]:
    """Parse argv: (settings, flags given explicitly, the recorded run's settings or None, the
    command line to record).

    With --resume, the settings start from the run's recorded command (command.json) and the
    flags given now override them.
    """
    parser = _parser()
    args, explicit = parser.parse_args(argv), _explicit(parser, argv)
    command = Path(args.out) / ckpt.COMMAND_FILE
    now = [arg for arg in argv if arg != "--resume"]
    if not (args.resume and command.is_file()):
        return args, explicit, None, now
    old_argv = _recorded_argv(command)
    before = _parse_recorded(old_argv, command)
    args = _parse_recorded(old_argv, command)
    for dest, value in explicit.items():
        setattr(args, dest, value)
    args.resume = True
    return args, {**_explicit(parser, old_argv), **explicit}, before, [*old_argv, *now]


def _recorded_argv(command: Path) -> list[str]:
    """The arguments command.json recorded, or a ValueError naming the file."""
    recorded = ckpt.read_json(command)
    argv = recorded.get("argv")
    if argv is None and isinstance(recorded.get("command"), str):
        argv = shlex.split(recorded["command"])[3:]  # after "python -m gptlib.train"
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError(
            f'{command} records no command line ("argv", a list of strings); restore the file, '
            "or start a new run from the checkpoint's weights with --init-from"
        )
    return argv


def _parse_recorded(argv: list[str], command: Path) -> argparse.Namespace:
    """argv parsed as the command line; a ValueError naming command.json if it does not parse."""

    class Recorded(argparse.ArgumentParser):
        def error(self, message: str):  # noqa: ANN201 (argparse's signature)
            raise ValueError(f"the command line recorded in {command} does not parse: {message}")

    return _parser(Recorded).parse_args(argv)


def _tokenizer_and_data(
    args: argparse.Namespace, explicit: dict, before: argparse.Namespace | None
) -> tuple[Any, Any, Any, str]:
    """(tokenizer, training data, validation data, one line describing the data)."""
    if (
        len(
            [n for n in ("text", "tokens") if getattr(args, n)]
            + ["corpus"] * ("corpus" in explicit)
        )
        > 1
    ):
        raise ValueError("give one of --corpus, --text and --tokens")
    saved, origin = None, None
    for folder in (args.out if args.resume else None, args.init_from):
        if folder is not None and (Path(folder) / ckpt.TOKENIZER_FILE).is_file():
            saved, origin = ckpt.read_tokenizer(Path(folder)), folder
            break
    if args.init_from and saved is None:
        raise FileNotFoundError(f"--init-from {args.init_from} holds no {ckpt.TOKENIZER_FILE}")
    changed = [
        f"--{k.replace('_', '-')}"
        for k in ("tokenizer", "vocab_size")
        if k in explicit and (before is None or getattr(before, k) != getattr(args, k))
    ]
    if saved is not None and changed:
        raise ValueError(
            f"{' and '.join(changed)} cannot change the tokenizer: the model in {origin} was "
            f"trained with {saved!r}, which this run keeps; drop the flag"
        )
    if args.tokens:
        given = [f"--{k.replace('_', '-')}" for k in ("max_chars", "val_fraction", "tokenizer",
                 "vocab_size") if k in explicit]  # fmt: skip
        if given:
            raise ValueError(
                f"{', '.join(given)} applies to --corpus and --text, not to --tokens: the token "
                "folder's tokenizer and validation split were fixed by python -m gptlib.prepare"
            )
        tokens = open_tokens(args.tokens)
        tokenizer = saved or tokens.tokenizer()
        if tokenizer.vocab_size != tokens.vocab_size:
            raise ValueError(f"{args.tokens} was made with another tokenizer than {tokenizer!r}")
        line = f"{args.tokens}: {tokens.meta['n_tokens']:,} tokens (memory-mapped)"
        return tokenizer, tokens.train, tokens.val, line
    if args.text:
        documents = read_documents(args.text, args.max_chars)
        text = "\n\n".join(documents) + "\n\n"
        tokenizer = saved or make_tokenizer(args.tokenizer, text, args.vocab_size)
        pieces = encode_documents(tokenizer, [[document] for document in documents])
        ids = torch.from_numpy(np.concatenate(list(pieces)))
        line = f"{args.text}: {len(documents)} file(s), {len(text):,} characters"
    else:
        text = load_corpus(args.corpus, args.max_chars)
        tokenizer = saved or make_tokenizer(args.tokenizer, text, args.vocab_size)
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        line = f"{args.corpus}: {len(text):,} characters"
    train_ids, val_ids = split(ids, args.val_fraction)
    return tokenizer, train_ids, val_ids, line


def _model_config(args: argparse.Namespace, explicit: dict, vocab_size: int) -> GPTConfig:
    """The GPTConfig the flags describe (or --init-from's, which flags may not change)."""
    names = [f.name for f in dataclasses.fields(GPTConfig) if f.name not in NOT_MODEL_FLAGS]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.full_size:
        overrides = {n: v for n, v in overrides.items() if n not in LAPTOP_SIZES or n in explicit}
    if args.init_from:
        base = GPTConfig.from_dict(ckpt.read_json(Path(args.init_from) / "config.json"))
        wanted = {n: overrides[n] for n in names if n in explicit and n in overrides}
        changed = [f"{n}={v!r} (it has {getattr(base, n)!r})" for n, v in wanted.items()
                   if n != "dropout" and v != getattr(base, n)]  # fmt: skip
        if changed:
            raise ValueError(
                f"--init-from {args.init_from} holds another architecture than the flags ask "
                f"for: {', '.join(changed)}; drop those flags (only --dropout may change)"
            )
        return dataclasses.replace(base, dropout=wanted.get("dropout", base.dropout))
    return GPTConfig.from_preset(args.preset, **overrides, vocab_size=vocab_size)


def _train_config(args: argparse.Namespace, explicit: dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"block_size"}
    values = {name: getattr(args, name) for name in fields}
    values["grad_clip"] = args.grad_clip or None
    values["track"] = tuple(args.track)
    saved_path = Path(args.out) / ckpt.TRAIN_CONFIG_FILE
    if args.resume and saved_path.is_file():  # settings not given again are the run's own
        saved = ckpt.read_json(saved_path)
        values = {**saved, **{k: v for k, v in values.items() if k in explicit}}
        if "grad_clip" in explicit:
            values["grad_clip"] = args.grad_clip or None
    return TrainConfig(**values)


def run(argv: Sequence[str] | None = None) -> History:
    """Build tokenizer, data and model from command-line arguments, then `train`.

    Taught in notebooks/02_first_gpt.ipynb. Run `python -m gptlib.train --help` for the options.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        args, explicit, before, command = _settings(argv)
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be a positive integer, got {args.threads}")
            torch.set_num_threads(args.threads)
        tokenizer, train_ids, val_ids, line = _tokenizer_and_data(args, explicit, before)
        model_config = _model_config(args, explicit, tokenizer.vocab_size)
        config = _train_config(args, explicit)
        torch.manual_seed(args.seed)
        model = GPT(model_config)
        if args.init_from and not args.resume:
            model.load_state_dict(GPT.load(args.init_from).state_dict())
        out = Path(args.out)
        if not args.no_progress and main_process:
            print(f"{line}, {tokenizer!r}, {model.num_params():,} parameters, "
                  f"training on {len(train_ids):,} tokens")  # fmt: skip
        info = {"command": shlex.join(["python", "-m", "gptlib.train", *command]), "argv": command,
                **{name: getattr(args, name) for name in DATA_FLAGS}, "init_from": args.init_from}  # fmt: skip
        history = train(model, train_ids, val_ids, config, out, args.resume,
                        not args.no_progress, tokenizer, {ckpt.COMMAND_FILE: info})  # fmt: skip
    except DivergedError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if history.steps and history.steps[-1] < config.max_steps:
        parser.exit(130, "Interrupted; run the same command with --resume to continue.\n")
    if args.final_weights_only and main_process:
        ckpt.drop(out, (ckpt.STATE_FILE,))
    if history.val_loss and main_process:
        print(
            f"done: {history.steps[-1]} steps in {history.seconds:.0f} s, "
            f"final val loss {history.val_loss[-1]:.4f}; checkpoint in {out}"
        )
    return history
