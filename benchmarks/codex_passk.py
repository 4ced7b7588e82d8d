"""Sample programs from a code model for the held-out problems and measure pass@k.

Run from the repository root:
    python benchmarks/codex_passk.py data/checkpoints/bpe_code_tasks
(options: --n 20 --temperatures 0.2 0.6 0.8 --seeds 0 --top-p 0.95 --max-new-tokens 48
 --threads 1 --out record.json)

For every held-out problem of `gptlib.code_tasks.make_tasks(0)`, every temperature and every
seed, the script samples n completions of the prompt in one batch with the KV cache, each
ending at the first stop sequence (`gptlib.codeeval.sample_programs`), runs prompt + completion
against the hidden tests in `gptlib.sandbox.Sandbox`, and prints pass@1 and pass@10 (the
unbiased estimator), the best temperature for each k, and how often the sample with the highest
mean token log-probability passes, against a random pick (Chen et al. 2021, §3.3). Problem i
draws with seed 1000 * i + seed. With --out it writes every sample (text, verdict, mean
log-probability) to a JSON record, which notebooks/11_codex.ipynb reads.
It also prints the time spent sampling and running programs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptlib.code_tasks import make_tasks  # noqa: E402
from gptlib.codeeval import pass_at_k, sample_programs  # noqa: E402
from gptlib.sandbox import Sandbox  # noqa: E402
from gptlib.train import load_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=20, help="samples per problem and temperature")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.6, 0.8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling (Codex: 0.95)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", choices=["eval", "train"], default="eval")
    parser.add_argument("--problems", type=int, help="only the first N problems (a quick look)")
    parser.add_argument("--out", type=Path, help="write every sample and verdict to this JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    train, held_out = make_tasks(0)
    tasks = held_out if args.split == "eval" else train[: len(held_out)]
    tasks = tasks[: args.problems]
    print(f"{args.checkpoint}: {model.num_params():,} parameters, {tokenizer!r}")
    print(f"{len(tasks)} {args.split} problems, n={args.n} samples each, top_p={args.top_p}\n")
    ks = [k for k in (1, 10, 100) if k <= args.n]
    runs, table = [], {}
    with Sandbox(timeout=1.0) as sandbox:
        for seed in args.seeds:
            for temperature in args.temperatures:
                sample_s = run_s = 0.0
                counts, picked, statuses, problems = [], 0, Counter(), []
                for i, task in enumerate(tasks):
                    start = time.perf_counter()
                    samples = sample_programs(
                        model, tokenizer, task.prompt, args.n, temperature,
                        args.max_new_tokens, seed=1000 * i + seed, top_p=args.top_p,
                    )  # fmt: skip
                    sample_s += time.perf_counter() - start
                    start = time.perf_counter()
                    results = sandbox.run_many(
                        [(task.prompt + s.text, task.entry_point, task.tests) for s in samples]
                    )
                    run_s += time.perf_counter() - start
                    counts.append(sum(r.passed for r in results))
                    statuses.update(r.status for r in results)
                    best = max(range(args.n), key=lambda j: samples[j].mean_logprob)
                    picked += results[best].passed
                    problems.append({
                        "task_id": task.task_id,
                        "samples": [[s.text, r.status, round(s.mean_logprob, 4)]
                                    for s, r in zip(samples, results, strict=True)],
                    })  # fmt: skip
                row = {k: sum(pass_at_k(args.n, c, k) for c in counts) / len(counts) for k in ks}
                table.setdefault(temperature, []).append(row)
                runs.append({"seed": seed, "temperature": temperature, "problems": problems})
                print(
                    f"seed {seed}, T={temperature}: "
                    + ", ".join(f"pass@{k} {v:.3f}" for k, v in row.items())
                    + f"; solved {sum(c > 0 for c in counts)}/{len(counts)}"
                    + f"; pick by mean log-p {picked / len(tasks):.3f}, at random {row[1]:.3f}"
                )
                print(f"  sampling {sample_s:.1f} s, running {run_s:.1f} s; {dict(statuses)}")
        print(f"\nsandbox: {sandbox.runs} programs run, the rest of the samples were cached")
    for k in ks:
        mean = {t: sum(r[k] for r in rows) / len(rows) for t, rows in table.items()}
        best = max(mean, key=mean.__getitem__)
        print(f"best temperature for pass@{k}: {best} ({mean[best]:.3f}, mean over seeds)")
    if args.out:
        record = {
            "command": "python " + shlex.join(["benchmarks/codex_passk.py", *sys.argv[1:]]),
            "checkpoint": Path(args.checkpoint).name,
            "split": args.split,
            "n": args.n,
            "max_new_tokens": args.max_new_tokens,
            "top_p": args.top_p,
            "sample": "[completion, status, mean log-probability]",
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
