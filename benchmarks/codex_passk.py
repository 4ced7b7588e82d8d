"""Sample programs from a code model for the held-out problems and measure pass@k.

Run from the repository root:
    python benchmarks/codex_passk.py data/checkpoints/code_tasks_bpe
(options: --n 20 --temperatures 0.2 0.6 0.8 --top-p 0.95 --max-new-tokens 64 --threads 1)

For every held-out problem of `gptlib.code_tasks.make_tasks(0)` and every temperature, the
script samples n completions of the prompt in one batch with the KV cache, cuts each at the
first stop sequence (`gptlib.codeeval.truncate_completion`), runs prompt + completion against
the hidden tests in `gptlib.sandbox.Sandbox`, and prints pass@1 and pass@10 (the unbiased
estimator), the best temperature for each k, and how often the sample with the highest mean
token log-probability passes, against a random pick (Chen et al. 2021, §3.3). The log-probs
are those of the sampled tokens at temperature 1, from one forward pass over each batch.
It also prints the time spent sampling and running programs, and the sandbox's cost per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptlib.code_tasks import make_tasks  # noqa: E402
from gptlib.codeeval import pass_at_k, truncate_completion  # noqa: E402
from gptlib.sandbox import Sandbox  # noqa: E402
from gptlib.train import load_checkpoint  # noqa: E402


def completion_lengths(tokenizer, new_ids: list[list[int]]) -> tuple[list[str], list[int]]:  # noqa: ANN001
    """Each row's completion cut at the first stop sequence, and the tokens it spans."""
    texts, lengths = [], []
    for row in new_ids:
        text = truncate_completion(tokenizer.decode(row))
        m = 1
        while m < len(row) and len(tokenizer.decode(row[:m])) < len(text):
            m += 1
        texts.append(text)
        lengths.append(m)
    return texts, lengths


@torch.inference_mode()
def sample(model, tokenizer, prompt: str, n: int, temperature: float, args, seed: int):  # noqa: ANN001, ANN201
    """n completions of prompt, with the sum and mean log-prob of each one's tokens."""
    ids = tokenizer.encode(prompt)
    idx = torch.tensor([ids] * n)
    out = model.generate(
        idx, args.max_new_tokens, temperature=temperature, top_p=args.top_p, seed=seed
    )
    new = out[:, len(ids) :]
    texts, lengths = completion_lengths(tokenizer, new.tolist())
    logp = model(out[:, :-1]).logits.float().log_softmax(-1)
    token_logp = logp[:, len(ids) - 1 :].gather(-1, new[..., None])[..., 0]
    mask = torch.arange(new.size(1))[None] < torch.tensor(lengths)[:, None]
    total = (token_logp * mask).sum(1)
    return texts, total.tolist(), (total / mask.sum(1)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=20, help="samples per problem and temperature")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.6, 0.8])
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling (Codex: 0.95)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", choices=["eval", "train"], default="eval")
    parser.add_argument("--problems", type=int, help="only the first N problems (a quick look)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, history = load_checkpoint(args.checkpoint)
    train, held_out = make_tasks(0)
    tasks = held_out if args.split == "eval" else train[: len(held_out)]
    tasks = tasks[: args.problems]
    print(f"{args.checkpoint}: {model.num_params():,} parameters, {tokenizer!r}")
    print(f"{len(tasks)} {args.split} problems, n={args.n} samples each, top_p={args.top_p}\n")
    ks = [k for k in (1, 10, 100) if k <= args.n]
    table = {}
    with Sandbox(timeout=1.0) as sandbox:
        for temperature in args.temperatures:
            sample_s = run_s = 0.0
            counts, ranked, by_family, statuses = [], Counter(), defaultdict(list), Counter()
            for i, task in enumerate(tasks):
                start = time.perf_counter()
                texts, total, mean = sample(
                    model, tokenizer, task.prompt, args.n, temperature, args, seed=1000 * i
                )
                sample_s += time.perf_counter() - start
                start = time.perf_counter()
                results = sandbox.run_many(
                    [(task.prompt + text, task.entry_point, task.tests) for text in texts]
                )
                run_s += time.perf_counter() - start
                passed = [r.passed for r in results]
                counts.append(sum(passed))
                by_family[task.family].append(sum(passed) / args.n)
                statuses.update(r.status for r in results)
                ranked["mean log-p"] += passed[max(range(args.n), key=mean.__getitem__)]
                ranked["sum log-p"] += passed[max(range(args.n), key=total.__getitem__)]
            row = {k: sum(pass_at_k(args.n, c, k) for c in counts) / len(counts) for k in ks}
            table[temperature] = row
            print(
                f"T={temperature}: "
                + ", ".join(f"pass@{k} {v:.3f}" for k, v in row.items())
                + f"; solved {sum(c > 0 for c in counts)}/{len(counts)}"
                + f"; pick by mean log-p {ranked['mean log-p'] / len(tasks):.3f}"
                + f", by sum log-p {ranked['sum log-p'] / len(tasks):.3f}"
                + f", at random {row[1]:.3f}"
            )
            print(f"  sampling {sample_s:.1f} s, running {run_s:.1f} s; {dict(statuses)}")
            print("  per family:", {f: round(sum(v) / len(v), 2) for f, v in by_family.items()})
        print(f"\nsandbox: {sandbox.runs} programs run, the rest of the samples were cached")
    for k in ks:
        best = max(table, key=lambda t: table[t][k])
        print(f"best temperature for pass@{k}: {best} ({table[best][k]:.3f})")


if __name__ == "__main__":
    main()
