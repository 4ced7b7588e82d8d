"""A pool of sandbox workers that runs many programs against hidden tests, on every core.

Taught in notebooks/11_codex.ipynb. `Sandbox` starts worker processes
(gptlib/sandbox_worker.py: one forked, limited child per program; its docstring lists the
limits and what a process sandbox cannot stop), sends each program with its tests' arguments
to an idle worker, and hands the report to `gptlib.codeeval.judge`, which alone knows the
expected values. Results are cached by (program, function, tests).

Cost: Python starts once per worker; a program then costs one fork, a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .codeeval import ExecResult, TestCase, judge

__all__ = ["Sandbox"]


class _Worker:
    """One `gptlib.sandbox_worker` process and its pipes."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("sandbox_worker.py")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-S", "-B", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=tempfile.gettempdir(),
            close_fds=True,
        )
        hello = self.process.stdout.readline()
        try:
            self.features = json.loads(hello)["ready"]
        except (ValueError, KeyError, TypeError):
            self.close()
            raise RuntimeError(
                f"the sandbox worker did not start (it said {hello[:200]!r})"
            ) from None

    def ask(self, job: dict) -> dict:
        self.process.stdin.write(json.dumps(job).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise BrokenPipeError("the sandbox worker ended")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


class Sandbox:
    """A pool of sandbox workers that runs programs against hidden tests, with a result cache.

    Taught in notebooks/11_codex.ipynb. ``workers`` processes (default: one per CPU core) each fork
    one limited child per program (see gptlib/sandbox_worker.py for the limits, and for what
    a process sandbox cannot stop). ``timeout`` is the wall-clock limit of one program with all
    its tests, in seconds; ``cpu_seconds`` its CPU limit (default: ``ceil(timeout)``);
    ``memory_mb`` its address-space limit. Results are cached by (program, function, test
    arguments): samples drawn at a low temperature often repeat. ``features`` says which
    protections hold on this machine (Landlock ABI, user, network, mount and PID namespaces,
    user ``nobody``): what a program can still reach depends on them and on the kernel. Use it
    as a context manager, or call `close`. Raises OSError on a system without ``fork``
    (Windows: use WSL).
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 2.0,
        cpu_seconds: int | None = None,
        memory_mb: int = 256,
        output_bytes: int = 1_000_000,
        file_bytes: int = 10_000_000,
    ) -> None:
        if not hasattr(os, "fork"):
            raise OSError(
                "running programs needs fork and resource limits: use Linux, macOS or WSL"
            )
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if memory_mb < 64:
            raise ValueError(f"memory_mb={memory_mb} is too small for Python; use 64 or more")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):  # fmt: skip
            raise ValueError(
                f"workers must be a positive int or None (one per core), got {workers!r}"
            )
        self.workers = workers or os.cpu_count() or 1
        self.limits = {
            "timeout": float(timeout),
            "cpu_seconds": cpu_seconds or math.ceil(timeout),
            "memory_bytes": memory_mb * 2**20,
            "output_bytes": output_bytes,
            "result_bytes": 1_000_000,
            "file_bytes": file_bytes,
        }
        self.cache: dict[str, ExecResult] = {}
        self.runs = 0  # programs actually run (cache misses)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._idle.put(self._start_worker())
        self.features: dict = dict(self._all[0].features)

    def _start_worker(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all.append(worker)
        return worker

    def _run_one(self, job: dict, tests: Sequence[TestCase]) -> ExecResult:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = self._start_worker()
        try:
            reply = worker.ask(job)
        except (BrokenPipeError, OSError, ValueError) as err:
            worker.close()  # killed (e.g. by a program's signal) or confused: replace it
            self._idle.put(self._start_worker())
            reply = {"worker_error": f"the worker process ended during the run ({err})"}
        else:
            self._idle.put(worker)
        return judge(reply, tests, job["entry_point"], self.limits)

    def run(self, program: str, entry_point: str, tests: Sequence[TestCase]) -> ExecResult:
        """Run one program against its tests (see `run_many`)."""
        return self.run_many([(program, entry_point, tests)])[0]

    def run_many(self, jobs: Iterable[tuple[str, str, Sequence[TestCase]]]) -> list[ExecResult]:
        """Run each (program, function name, tests) in the sandbox, all cores busy; in order.

        Taught in notebooks/11_codex.ipynb. ``program`` is the whole source (prompt + completion);
        the function named ``entry_point`` is called with each test's arguments.
        """
        if self._closed:
            raise RuntimeError(
                "this Sandbox is closed; make a new one (with Sandbox() as box: ...)"
            )
        jobs = list(jobs)
        keys, todo = [], {}
        for program, entry_point, tests in jobs:
            if not isinstance(program, str) or not isinstance(entry_point, str):
                raise TypeError("each job is (program source, function name, tests)")
            if not tests or not all(isinstance(t, TestCase) for t in tests):
                raise TypeError("tests must be a non-empty sequence of codeeval.TestCase")
            job = {"program": program, "entry_point": entry_point,
                   "args": [repr(t.args) for t in tests], **self.limits}  # fmt: skip
            key = hashlib.sha256(json.dumps([job, [repr(t.expected) for t in tests]]).encode())
            keys.append(key.hexdigest())
            if keys[-1] not in self.cache:
                todo[keys[-1]] = (job, tests)
        if todo:
            with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
                results = pool.map(lambda item: self._run_one(*item), todo.values())
                self.cache.update(zip(todo, results, strict=True))
            self.runs += len(todo)
        return [self.cache[key] for key in keys]

    def close(self) -> None:
        """Stop every worker process."""
        with self._lock:
            self._closed = True
            for worker in self._all:
                worker.close()
            self._all.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
