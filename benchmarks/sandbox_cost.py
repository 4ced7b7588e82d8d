"""What it costs to run one program against its tests in gptlib's sandbox, and why it forks.

Run from the repository root:  python benchmarks/sandbox_cost.py  (options: --programs 400)

Each program is a reference solution of `gptlib.code_tasks` with its hidden tests, made
distinct (a comment with a counter) so the cache never answers. Three ways to run them:

- `gptlib.sandbox.Sandbox` with one worker, then with one worker per core: Python starts
  once per worker and each program costs one fork of a small, already-started process;
- a fresh ``python -S`` process per program (what a harness that spawns an interpreter per
  candidate pays), on a tenth as many programs.

It prints wall-clock milliseconds per program, and for the sandbox the CPU milliseconds the
confined children used (their own accounting, from ``wait4``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gptlib.code_tasks import make_tasks  # noqa: E402
from gptlib.sandbox import Sandbox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=400)
    args = parser.parse_args()
    train, _ = make_tasks(0)
    jobs = [
        (f"# program {i}\n" + task.text, task.entry_point, task.tests)
        for i, task in enumerate(train[i % len(train)] for i in range(args.programs))
    ]
    print(f"{args.programs} programs, {sum(len(j[2]) for j in jobs) / len(jobs):.1f} tests each")
    for workers in sorted({1, os.cpu_count() or 1}):
        with Sandbox(workers=workers, timeout=5.0) as sandbox:
            sandbox.run_many(jobs[:workers])  # start the workers before timing
            start = time.perf_counter()
            results = sandbox.run_many(jobs[workers:])
            wall = (time.perf_counter() - start) / len(results)
            child_cpu = sum(r.cpu_seconds for r in results) / len(results)
            assert all(r.passed for r in results)
            print(
                f"Sandbox, {workers} worker(s): {1000 * wall:.1f} ms wall per program, "
                f"{1000 * child_cpu:.1f} ms CPU in the child; features {sandbox.features}"
            )
    fresh = jobs[: max(1, args.programs // 10)]
    start = time.perf_counter()
    for program, entry_point, tests in fresh:
        checks = "".join(f"assert {t.call(entry_point)} == {t.expected!r}\n" for t in tests)
        subprocess.run([sys.executable, "-S", "-c", program + checks], check=True, env={})
    wall = (time.perf_counter() - start) / len(fresh)
    print(f"a fresh python -S per program (no limits, no isolation): {1000 * wall:.1f} ms wall")


if __name__ == "__main__":
    main()
