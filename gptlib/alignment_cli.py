"""The command line `python -m gptlib.alignment`: InstructGPT's three stages, and DPO, on the toy world.

Taught in notebooks/12_instructgpt.ipynb,
which loads what this command writes. `gptlib.alignment.main`
calls `run`. For each seed it fine-tunes the base model on demonstrations (SFT), has the
labeler rank K of the SFT model's responses per prompt, trains a reward model on those
rankings, runs PPO against it at each KL coefficient β, runs DPO on the same rankings, and
scores every model with the hidden labeler on held-out instructions.

Each seed draws its own prompts: SFT from instruction seed 1000 + seed, comparisons from
2000 + seed, PPO from 3000 + seed, evaluation from 9000 + seed (`make_instructions`).

Written to --out: ``results.json`` (the settings, the command, and per seed every curve and
score) and, for the seeds in --save-models, ``seed<N>/sft``, ``seed<N>/reward_model``,
``seed<N>/ppo_beta<β>`` and ``seed<N>/dpo`` (`GPT.save` / `SequenceClassifier.save` folders).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .alignment import (
    SFTData,
    normalise_scores,
    pairwise_accuracy,
    reward_model,
    sampled_kl,
    sequence_scores,
    train_reward_model,
)
from .dpo import train_dpo
from .instructions import (
    Instruction,
    demonstrations,
    encode_example,
    encode_prompt,
    end_of_text_id,
    label_comparisons,
    make_instructions,
    respond,
)
from .labeler import Labeler
from .model import GPT
from .ppo import PPOConfig, ppo, value_model
from .train import History, TrainConfig, load_checkpoint, train

RESULTS_FILE = "results.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gptlib.alignment",
        description="SFT, reward model, PPO at several KL coefficients, and DPO on gptlib's toy "
        "instruction world, scored by its hidden labeler.",
    )
    p.add_argument("--base", required=True, help="checkpoint folder of the pre-trained model")
    p.add_argument("--out", required=True, help="folder for results.json and the models")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--save-models", type=int, nargs="*", default=[0], help="seeds to save")
    p.add_argument("--flaw-rate", type=float, default=0.5, help="share of flawed demonstrations")
    p.add_argument("--sft-examples", type=int, default=4000)
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--sft-batch-size", type=int, default=32)
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--rm-prompts", type=int, default=500, help="prompts ranked by the labeler")
    p.add_argument("--k", type=int, default=4, help="responses ranked per prompt")
    p.add_argument("--test-fraction", type=float, default=0.2, help="prompts held out from the RM")
    p.add_argument("--rm-steps", type=int, default=150)
    p.add_argument("--rm-prompts-per-batch", type=int, default=16)
    p.add_argument("--rm-lr", type=float, default=1e-3)
    p.add_argument("--ppo-betas", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--ppo-prompts", type=int, default=500)
    defaults = PPOConfig()
    for name in ("steps", "batch_size", "minibatch_size", "epochs"):
        p.add_argument(f"--ppo-{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--ppo-lr", type=float, default=defaults.lr)
    p.add_argument("--value-lr", type=float, default=defaults.value_lr)
    p.add_argument("--dpo-beta", type=float, default=0.3)
    p.add_argument("--dpo-steps", type=int, default=60)
    p.add_argument("--dpo-batch-size", type=int, default=32)
    p.add_argument("--dpo-lr", type=float, default=5e-5)
    p.add_argument("--eval-prompts", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    return p


def _supervised_fine_tune(
    model: GPT, train_data: SFTData, val_data: SFTData, args: argparse.Namespace, seed: int
) -> History:
    """SFT with the library's training loop: next-token loss on the response tokens only, AdamW,
    no warmup and a cosine decay to 10% of the learning rate, as InstructGPT's SFT (Ouyang et
    al. 2022, App. C), evaluated on held-out demonstrations every 100 steps."""
    config = TrainConfig(
        max_steps=args.sft_steps,
        batch_size=args.sft_batch_size,
        lr=args.sft_lr,
        warmup_steps=0,
        weight_decay=0.0,
        eval_interval=100,
        eval_batches=4,
        seed=seed,
    )
    return train(model, train_data, val_data, config, progress=False)


def _evaluate(
    policy: GPT,
    sft: GPT,
    rm: Any,
    tokenizer: Any,
    instructions: list[Instruction],
    seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The hidden labeler's mean score, share of perfect responses and mean of each criterion,
    the RM score, and the sampled KL to the SFT model, on one response per instruction."""
    labeler = Labeler()
    rollout, texts = respond(
        policy, tokenizer, instructions, seed=seed, max_new_tokens=args.max_new_tokens
    )
    scores = [labeler.score(i, t) for i, t in zip(instructions, texts, strict=True)]
    criteria: dict[str, list[float]] = {}
    for instruction, text in zip(instructions, texts, strict=True):
        for name, value in labeler.criteria(instruction, text).items():
            criteria.setdefault(name, []).append(value)
    with torch.no_grad():
        rm_score = sequence_scores(rm, rollout.idx, rollout.last).mean()
    return {
        "labeler": sum(scores) / len(scores),
        "perfect": sum(s == 1.0 for s in scores) / len(scores),
        "criteria": {name: sum(v) / len(v) for name, v in criteria.items()},
        "rm_score": float(rm_score),
        "kl": float(sampled_kl(policy, sft, rollout).mean()),
        "samples": [f"{i.text} -> {t}" for i, t in zip(instructions[:8], texts, strict=False)],
    }


def _best_of_n(
    sft: GPT, rm: Any, tokenizer: Any, instructions: list[Instruction], seed: int, args: Any
) -> dict[str, float]:
    """Labeler score of the response the RM likes best among the first n of 16 samples."""
    labeler, n_max = Labeler(), 16
    rollout, texts = respond(
        sft, tokenizer, instructions, n_max, seed + 1, max_new_tokens=args.max_new_tokens
    )
    with torch.no_grad():
        rm_scores = sequence_scores(rm, rollout.idx, rollout.last).view(-1, n_max)
    result = {}
    for n in (1, 2, 4, 8, 16):
        best = rm_scores[:, :n].argmax(dim=1).tolist()
        picked = [
            labeler.score(i, texts[g * n_max + b])
            for g, (i, b) in enumerate(zip(instructions, best, strict=True))
        ]
        result[str(n)] = sum(picked) / len(picked)
    return result


def _one_seed(base: GPT, tokenizer: Any, seed: int, args: argparse.Namespace, out: Path) -> dict:
    labeler, result, seconds = Labeler(), {}, {}
    save = seed in args.save_models
    start = time.perf_counter()
    torch.manual_seed(seed)
    sft_instructions = make_instructions(args.sft_examples, seed=1000 + seed)
    texts = demonstrations(sft_instructions, seed=1000 + seed, flaw_rate=args.flaw_rate)
    examples = [
        encode_example(tokenizer, i, t) for i, t in zip(sft_instructions, texts, strict=True)
    ]
    n_val = max(1, len(examples) // 20)  # 5% of the demonstrations measure the SFT loss
    pad = end_of_text_id(tokenizer)
    sft = copy.deepcopy(base)
    history = _supervised_fine_tune(
        sft, SFTData(examples[n_val:], pad), SFTData(examples[:n_val], pad), args, seed
    )
    result["sft_loss"] = history.train_loss
    result["sft_val_loss"] = {"steps": history.eval_steps, "loss": history.val_loss}
    sft.eval()
    seconds["sft"] = time.perf_counter() - start

    start = time.perf_counter()
    rm_instructions = make_instructions(args.rm_prompts, seed=2000 + seed)
    rollout, texts = respond(
        sft,
        tokenizer,
        rm_instructions,
        n=args.k,
        seed=2000 + seed,
        max_new_tokens=args.max_new_tokens,
    )
    comparisons = label_comparisons(labeler, rm_instructions, rollout, texts)
    n_train = round(len(rm_instructions) * (1 - args.test_fraction))
    train_data = comparisons.subset(torch.arange(n_train))
    test_data = comparisons.subset(torch.arange(n_train, len(rm_instructions)))
    rm = reward_model(sft)
    result["rm_loss"] = train_reward_model(
        rm, train_data, args.rm_steps, args.rm_prompts_per_batch, args.rm_lr, seed
    )
    normalise_scores(rm, rollout.idx, rollout.last)
    result["rm"] = {
        "pairs_train": len(train_data.pairs),
        "pairs_test": len(test_data.pairs),
        "pairs_possible": len(rm_instructions) * args.k * (args.k - 1) // 2,
        "accuracy_train": pairwise_accuracy(rm, train_data),
        "accuracy_test": pairwise_accuracy(rm, test_data) if len(test_data.pairs) else None,
    }
    seconds["reward_model"] = time.perf_counter() - start

    eval_instructions = make_instructions(args.eval_prompts, seed=9000 + seed)
    evaluate = lambda policy: _evaluate(policy, sft, rm, tokenizer, eval_instructions, seed, args)  # noqa: E731
    result["eval"] = {"base": evaluate(base), "sft": evaluate(sft)}
    result["best_of_n"] = _best_of_n(sft, rm, tokenizer, eval_instructions, seed, args)
    if save:
        sft.save(out / f"seed{seed}" / "sft")
        rm.save(out / f"seed{seed}" / "reward_model")

    ppo_instructions = make_instructions(args.ppo_prompts, seed=3000 + seed)
    prompts = [encode_prompt(tokenizer, i) for i in ppo_instructions]

    def judge(chosen: list[int], rollout: Any) -> dict[str, float]:
        eos = end_of_text_id(tokenizer)
        texts = [tokenizer.decode(r) for r in rollout.responses(eos)]
        scores = [labeler.score(ppo_instructions[i], t) for i, t in zip(chosen, texts, strict=True)]
        return {
            "labeler": sum(scores) / len(scores),
            "perfect": sum(s == 1.0 for s in scores) / len(scores),
        }

    result["ppo"] = {}
    for beta in args.ppo_betas:
        start = time.perf_counter()
        config = PPOConfig(
            steps=args.ppo_steps,
            batch_size=args.ppo_batch_size,
            minibatch_size=args.ppo_minibatch_size,
            epochs=args.ppo_epochs,
            lr=args.ppo_lr,
            value_lr=args.value_lr,
            beta=beta,
            max_new_tokens=args.max_new_tokens,
            seed=seed,
        )
        policy = copy.deepcopy(sft)
        history = ppo(
            policy,
            sft,
            rm,
            value_model(rm),
            prompts,
            end_of_text_id(tokenizer),
            config,
            evaluate=judge,
        )
        result["ppo"][f"{beta:g}"] = {"history": history.to_dict(), "eval": evaluate(policy)}
        if save:
            policy.save(out / f"seed{seed}" / f"ppo_beta{beta:g}")
        seconds[f"ppo_beta{beta:g}"] = time.perf_counter() - start

    start = time.perf_counter()
    policy = copy.deepcopy(sft)
    history = train_dpo(
        policy,
        sft,
        train_data,
        args.dpo_beta,
        args.dpo_steps,
        args.dpo_batch_size,
        args.dpo_lr,
        seed,
    )
    result["dpo"] = {"history": history, "eval": evaluate(policy.eval())}
    if save:
        policy.save(out / f"seed{seed}" / "dpo")
    seconds["dpo"] = time.perf_counter() - start
    result["seconds"] = seconds
    return result


def run(argv: Sequence[str] | None = None) -> dict:
    """Run every stage for every seed and write results.json (and the models) to --out.

    Taught in notebooks/12_instructgpt.ipynb.
    Run `python -m gptlib.alignment --help` for the options.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        base, tokenizer, _ = load_checkpoint(args.base)
        end_of_text_id(tokenizer)
        if (out / RESULTS_FILE).exists():
            raise FileExistsError(f"{out} already holds {RESULTS_FILE}; choose a new --out")
        unknown = set(args.save_models) - set(args.seeds)
        if unknown:
            raise ValueError(
                f"--save-models names seeds {sorted(unknown)} that --seeds does not run"
            )
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "gptlib.alignment", *(argv or sys.argv[1:])]),
        "settings": vars(args),
        "seeds": {},
    }
    for seed in args.seeds:
        results["seeds"][str(seed)] = _one_seed(base, tokenizer, seed, args, out)
        ckpt.write_json(out / RESULTS_FILE, results)
        print(f"seed {seed} done: {results['seeds'][str(seed)]['seconds']}", flush=True)
    return results
