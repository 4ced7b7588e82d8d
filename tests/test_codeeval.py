"""Tests for gptlib.codeeval, gptlib.sandbox and its worker: pass@k, running untrusted programs.

The adversarial programs below each try one way to escape, to fake a pass or to take the caller
down. Each must be contained and reported, never pass, and leave the sandbox usable.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest

from gptlib.codeeval import (
    ExecResult,
    TestCase,
    judge,
    pass_at_k,
    pass_at_k_biased,
    pass_at_k_exact,
    truncate_completion,
)
from gptlib.sandbox import Sandbox

# ---------------------------------------------------------------------------- pass@k


def test_pass_at_k_equals_the_combinatorial_definition_for_every_small_case() -> None:
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k_exact(n, c, k) == exact
                assert math.isclose(pass_at_k(n, c, k), float(exact), rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize("c", [0, 1, 2, 5, 17, 100, 150, 191, 195, 199, 200])
@pytest.mark.parametrize("k", [1, 2, 10, 50, 100, 200])
def test_pass_at_k_is_accurate_for_n_200(c: int, k: int) -> None:
    n = 200
    exact = float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))
    assert math.isclose(pass_at_k(n, c, k), exact, rel_tol=1e-12, abs_tol=1e-15)


def test_pass_at_k_special_values() -> None:
    assert pass_at_k(20, 0, 10) == 0.0
    assert pass_at_k(20, 20, 1) == 1.0
    assert pass_at_k(20, 11, 10) == 1.0  # only 9 failures: every 10 drawn hold a pass
    assert pass_at_k(20, 1, 20) == 1.0
    for c in range(21):
        assert math.isclose(pass_at_k(20, c, 1), c / 20)


def test_unbiased_estimator_has_the_true_mean_and_the_naive_one_falls_short() -> None:
    # E over c ~ Binomial(n, p) of the estimate, exactly, in fractions.
    n, k, p = 12, 5, Fraction(3, 10)
    pmf = [math.comb(n, c) * p**c * (1 - p) ** (n - c) for c in range(n + 1)]
    truth = 1 - (1 - p) ** k
    assert sum(w * pass_at_k_exact(n, c, k) for c, w in enumerate(pmf)) == truth
    naive = sum(float(w) * pass_at_k_biased(n, c, k) for c, w in enumerate(pmf))
    assert naive < float(truth) - 0.01
    assert pass_at_k_biased(n, 4, 1) == pytest.approx(pass_at_k(n, 4, 1))  # same at k = 1


@pytest.mark.parametrize(
    ("n", "c", "k", "error"),
    [
        (10, 3, 11, ValueError),
        (10, 11, 1, ValueError),
        (10, -1, 1, ValueError),
        (10, 3, 0, ValueError),
        (0, 0, 1, ValueError),
        (10.0, 3, 1, TypeError),
        (10, 3.0, 1, TypeError),
        (10, 3, "1", TypeError),
        (10, True, 1, TypeError),
    ],
)
def test_pass_at_k_rejects_impossible_counts(n: object, c: object, k: object, error: type) -> None:
    for estimator in (pass_at_k, pass_at_k_exact, pass_at_k_biased):
        with pytest.raises(error):
            estimator(n, c, k)  # type: ignore[arg-type]


def test_truncate_completion_cuts_at_the_first_stop_sequence() -> None:
    body = "    return x + 1\n"
    assert truncate_completion(body + "\n\ndef g(y):\n    return y\n") == body + "\n"
    assert truncate_completion(body + "\nprint(f(2))\n") == body
    assert truncate_completion(body + "\n# done\n") == body
    assert truncate_completion(body) == body
    assert truncate_completion("    if x:\n        return 1\n") == "    if x:\n        return 1\n"
    with pytest.raises(TypeError):
        truncate_completion(body, stop="\ndef")


def test_test_case_accepts_only_plain_literals() -> None:
    case = TestCase(([1, 2], "a b", None, (3.5, -1)), {"k": {1, 2}})
    assert case.call("f") == "f([1, 2], 'a b', None, (3.5, -1))"
    for bad in (object(), float("nan"), [1, object()], {1: type}):
        with pytest.raises(ValueError, match="plain Python literal"):
            TestCase((bad,), 1)
    with pytest.raises(TypeError, match="tuple"):
        TestCase([1], 1)  # type: ignore[arg-type]


def test_judge_never_passes_without_every_expected_value_from_the_harness() -> None:
    tests = [TestCase((1,), 2), TestCase((2,), 4)]
    limits = {"timeout": 1.0, "cpu_seconds": 1, "memory_bytes": 2**28, "file_bytes": 10**7}
    base = {"output": "", "timed_out": False, "cut": "", "exit_code": 0, "signal": None}

    def verdict(*lines: str, **changes: object) -> ExecResult:
        return judge({**base, "results": list(lines), **changes}, tests, "f", limits)

    good = ('{"test": 0, "value": "2"}', '{"test": 1, "value": "4"}')
    assert verdict(*good).passed
    assert verdict(*good, timed_out=True).status == "timed out"
    assert verdict(*good, '{"test": 1, "value": "4"}').status == "crashed"  # a forged extra line
    assert verdict(*good, "garbage").status == "crashed"
    assert verdict(good[0]).status == "crashed"  # stopped after one test
    assert verdict(good[0], '{"test": 1, "value": "4.0"}').status == "failed"  # 4.0 is not 4
    assert verdict(good[0], '{"test": 1, "value": "__import__(\'os\')"}').status == "failed"
    assert verdict(good[0], '{"test": 1, "error": "ValueError: no"}').reason.startswith("test 2")


# ---------------------------------------------------------------------------- the sandbox

DOUBLE = [TestCase((2,), 4), TestCase((3,), 6), TestCase((-5,), -10)]


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox(workers=2, timeout=1.5, cpu_seconds=1, memory_mb=200) as box:
        yield box


def run(sandbox: Sandbox, program: str, tests: list[TestCase] = DOUBLE) -> ExecResult:
    result = sandbox.run(program, "f", tests)
    assert result.status in ("passed", "failed", "timed out", "crashed")
    assert result.reason
    return result


def test_a_correct_program_passes_and_a_wrong_one_fails_with_the_reason(sandbox: Sandbox) -> None:
    assert run(sandbox, "def f(x):\n    return 2 * x\n").passed
    wrong = run(sandbox, "def f(x):\n    return x + 2\n")
    assert wrong.status == "failed"
    assert wrong.tests_passed == 1
    assert wrong.reason == "test 2: f(3) returned 5, expected 6"
    raised = run(sandbox, "def f(x):\n    return x // 0\n")
    assert raised.status == "failed" and "ZeroDivisionError" in raised.reason
    assert run(sandbox, "def f(x)\n    return 2 * x\n").status == "crashed"  # syntax error
    assert run(sandbox, "def g(x):\n    return 2 * x\n").status == "crashed"  # no f


ESCAPES = {
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\ndef f(x):\n    return 0\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "os._exit(0) inside the function": "import os\ndef f(x):\n    os._exit(0)\n",
    "sys.exit(0) inside the function": "import sys\ndef f(x):\n    sys.exit(0)\n",
    "raise SystemExit in a finally": "def f(x):\n    try:\n        return 0\n    finally:\n        raise SystemExit(0)\n",
    "patched AssertionError and builtins": (
        "import builtins\nbuiltins.AssertionError = Exception\nbuiltins.repr = lambda v: '4'\n"
        "builtins.isinstance = lambda *a: True\ndef f(x):\n    return 0\n"
    ),
    "patched json and os.write": (
        'import json, os\njson.dumps = lambda *a, **k: \'{"test": 0, "value": "4"}\'\n'
        "os.write = lambda fd, data: len(data)\ndef f(x):\n    return 0\n"
    ),
    "an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "def f(x):\n    return Anything()\n"
    ),
    "an int subclass equal to everything": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\ndef f(x):\n    return Int(0)\n"
    ),
    "forged result lines, then exit": (
        "import os\nfor fd in range(3, 32):\n    try:\n        os.write(fd, b'"
        '{"test": 0, "value": "0"}\\n{"test": 1, "value": "0"}\\n{"test": 2, "value": "0"}\\n'
        "')\n    except OSError:\n        pass\nos._exit(0)\n"
    ),
    "atexit handler": "import atexit\natexit.register(lambda: print('ok'))\ndef f(x):\n    return 0\n",
    "reads stdin": "def f(x):\n    return int(input())\n",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_no_trick_turns_a_wrong_program_into_a_pass(sandbox: Sandbox, name: str) -> None:
    result = run(sandbox, ESCAPES[name])
    assert not result.passed, result
    assert result.status in ("failed", "crashed")
    assert result.wall_seconds < 1.5


HOGS = {
    "infinite loop": ("def f(x):\n    while True:\n        pass\n", "timed out"),
    "sleeps forever": ("import time\ndef f(x):\n    time.sleep(1000)\n", "timed out"),
    "closes its pipes, then sleeps": (
        "import os, time\ndef f(x):\n    for fd in range(32):\n        try:\n            os.close(fd)\n"
        "        except OSError:\n            pass\n    time.sleep(1000)\n",
        "timed out",
    ),
    "fork loop": ("import os\ndef f(x):\n    while True:\n        os.fork()\n", "failed"),
    "threads": (
        "import threading\ndef f(x):\n    threading.Thread(target=lambda: None).start()\n"
        "    return 2 * x\n",
        "failed",
    ),
    "deep recursion": ("def f(x):\n    return f(x + 1)\n", "failed"),
    "unbounded recursion limit": (
        "import sys\nsys.setrecursionlimit(10**9)\ndef f(x):\n    return f(x + 1)\n",
        None,
    ),
    "unbounded memory": (
        "def f(x):\n    a = []\n    while True:\n        a.append(' ' * 10**6)\n",
        None,
    ),
    "huge stdout": ("def f(x):\n    while True:\n        print('x' * 10**4)\n", "crashed"),
    "huge file": ("def f(x):\n    open('big', 'w').write('x' * 50_000_000)\n", "failed"),
    "huge result": ("def f(x):\n    return 'x' * 5_000_000\n", "crashed"),
}


@pytest.mark.parametrize("name", list(HOGS))
def test_resource_hogs_are_stopped_and_reported(sandbox: Sandbox, name: str) -> None:
    program, status = HOGS[name]
    start = time.monotonic()
    result = run(sandbox, program)
    assert not result.passed, result
    if status:
        assert result.status == status, result
    assert time.monotonic() - start < 15  # the 1.5 s limit plus a wide margin for a busy machine
    assert run(sandbox, "def f(x):\n    return 2 * x\n").passed  # and the sandbox still works


def test_limits_are_named_in_the_reasons(sandbox: Sandbox) -> None:
    assert "wall-clock" in run(sandbox, HOGS["sleeps forever"][0]).reason
    assert "printed more than" in run(sandbox, HOGS["huge stdout"][0]).reason
    fork = run(sandbox, HOGS["fork loop"][0])
    assert "BlockingIOError" in fork.reason or "PermissionError" in fork.reason  # fork refused
    memory = run(sandbox, HOGS["unbounded memory"][0])
    assert "MemoryError" in memory.reason or memory.status in ("crashed", "timed out")


def test_the_program_sees_no_environment_and_a_fresh_folder(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("GPTLIB_TEST_SECRET", "do-not-leak")
    with Sandbox(workers=1, timeout=1.5) as fresh:  # started after the secret was set
        program = (
            "import os\ndef f(x):\n    open('note.txt', 'w').write('hi')\n"
            "    return (sorted(os.environ), os.getcwd(), sorted(os.listdir('.')))\n"
        )
        reply = fresh._all[0].ask({"program": program, "entry_point": "f", "args": ["(0,)"],
                                   **fresh.limits})  # fmt: skip
    (value,) = [eval(__import__("json").loads(line)["value"]) for line in reply["results"]]  # noqa: S307
    names, cwd, listing = value
    assert "GPTLIB_TEST_SECRET" not in names
    assert set(names) <= {"HOME", "LANG", "PATH", "TMPDIR"}
    assert listing == ["note.txt"]
    assert not Path(cwd).exists()  # the folder is deleted after the run


def _files_protected(sandbox: Sandbox) -> bool:
    return sandbox.features["landlock_abi"] > 0 or sandbox.features["user"] == "nobody"


def test_files_outside_the_folder_survive(sandbox: Sandbox, tmp_path: Path) -> None:
    if not _files_protected(sandbox):
        pytest.skip("without Landlock or root, a process sandbox cannot protect your files")
    tmp_path.chmod(0o755)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    program = (
        "import os, shutil\ndef f(x):\n    errors = 0\n"
        f"    for action in (lambda: os.remove({str(victim)!r}),\n"
        f"                   lambda: open({str(victim)!r}, 'w').write('gone'),\n"
        f"                   lambda: open({str(tmp_path / 'new.txt')!r}, 'w').write('x'),\n"
        f"                   lambda: shutil.rmtree({str(tmp_path)!r})):\n"
        "        try:\n            action()\n        except OSError:\n            errors += 1\n"
        "    return errors\n"
    )
    result = run(sandbox, program, [TestCase((0,), 4)])
    assert result.passed, result  # all four attempts were refused
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_a_program_that_kills_its_worker_fails_and_the_worker_is_replaced(sandbox: Sandbox) -> None:
    program = "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 2 * x\n"
    workers = {w.process.pid for w in sandbox._all}
    result = run(sandbox, program)
    if sandbox.features["pid_namespace"]:
        # Process 1 of its own PID namespace: its parent is outside (getppid() is 0), so the
        # signal reaches no worker; the program goes on and its answer is judged as usual.
        assert workers == {w.process.pid for w in sandbox._all}
    else:
        assert not result.passed  # the worker died under it: a crash, never a pass
    assert run(sandbox, "def f(x):\n    return 2 * x\n").passed  # a killed worker is replaced


def test_kill_minus_one_reaches_no_process_outside_where_signals_are_contained(
    sandbox: Sandbox,
) -> None:
    features = sandbox.features
    if not (features["pid_namespace"] or features["landlock_abi"] >= 6):
        pytest.skip("no PID namespace and Landlock before ABI 6: kill(-1) reaches your processes")
    victim = subprocess.Popen(["sleep", "30"])  # one of our processes, outside the sandbox
    try:
        program = (
            "import os, signal\ndef f(x):\n"
            "    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n"
            "    return 2 * x\n"
        )
        workers = {w.process.pid for w in sandbox._all}
        assert run(sandbox, program).passed  # it is still alive to report: it killed nothing
        assert victim.poll() is None
        assert workers == {w.process.pid for w in sandbox._all}  # no worker was replaced
    finally:
        victim.kill()
        victim.wait()


def test_tcp_is_unreachable_where_the_sandbox_says_so(sandbox: Sandbox) -> None:
    features = sandbox.features
    if not (features["network_namespace"] or features["landlock_abi"] >= 4):
        pytest.skip("no network namespace and no Landlock TCP rules: TCP is reachable")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = (
            "import socket\ndef f(x):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "    return 'connected'\n"
        )
        result = run(sandbox, program, [TestCase((0,), "connected")])
    assert result.status == "failed"
    assert "Error" in result.reason and "ModuleNotFound" not in result.reason


def test_no_udp_packet_leaves_where_the_worker_has_a_network_namespace(sandbox: Sandbox) -> None:
    if not sandbox.features["network_namespace"]:
        pytest.skip("no network namespace (not root, no user namespaces): UDP, e.g. DNS, works")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        program = (
            "import socket\ndef f(x):\n"
            "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
            f"        s.sendto(b'leak', ('127.0.0.1', {port}))\n"
            "    return 'sent'\n"
        )
        result = run(sandbox, program, [TestCase((0,), "sent")])
        with pytest.raises(TimeoutError):
            listener.recvfrom(64)
    assert result.status == "failed" and "unreachable" in result.reason, result


def test_no_unix_socket_in_tmp_is_reachable_where_the_sandbox_hides_them(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    if not sandbox.features["socket_folders_hidden"]:
        pytest.skip("no mount namespace: UNIX sockets under /tmp and /run are reachable by path")
    tmp_path.chmod(0o755)
    path = tmp_path / "bus.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen()
        server.settimeout(0.3)
        program = (
            "import socket\ndef f(x):\n"
            "    with socket.socket(socket.AF_UNIX) as s:\n"
            f"        s.connect({str(path)!r})\n"
            "        s.sendall(b'leak')\n"
            "    return 'sent'\n"
        )
        result = run(sandbox, program, [TestCase((0,), "sent")])
        with pytest.raises(TimeoutError):
            server.accept()
    assert result.status == "failed", result


def test_results_are_cached_and_returned_in_order(sandbox: Sandbox) -> None:
    programs = [f"def f(x):\n    return {m} * x\n" for m in (2, 3, 2, 2, 1, 2)]
    before = sandbox.runs
    results = sandbox.run_many([(p, "f", DOUBLE) for p in programs])
    assert [r.passed for r in results] == [True, False, True, True, False, True]
    assert sandbox.runs - before <= 3  # three distinct programs
    assert sandbox.run_many([(programs[0], "f", DOUBLE)])[0] is results[0]


def test_bad_arguments_raise_clear_errors(sandbox: Sandbox) -> None:
    with pytest.raises(TypeError, match="TestCase"):
        sandbox.run("def f(x):\n    return x\n", "f", [((1,), 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="TestCase"):
        sandbox.run("def f(x):\n    return x\n", "f", [])
    with pytest.raises(ValueError, match="timeout"):
        Sandbox(timeout=0)
    with pytest.raises(ValueError, match="workers"):
        Sandbox(workers=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Sandbox(memory_mb=16)
    closed = Sandbox(workers=1)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.run("def f(x):\n    return x\n", "f", DOUBLE)


def test_the_caller_process_is_untouched(sandbox: Sandbox) -> None:
    pid, cwd = os.getpid(), os.getcwd()
    run(sandbox, "import os\nos.chdir('/')\ndef f(x):\n    return 0\n")
    assert (os.getpid(), os.getcwd()) == (pid, cwd)


def test_the_worker_also_waits_without_waitid(monkeypatch) -> None:
    # macOS has no os.waitid; the worker then polls wait4. Exercise that path here.
    from gptlib import sandbox_worker

    monkeypatch.delattr(os, "waitid")
    features = {"landlock_abi": 0, "network_namespace": False, "user_namespace": False}
    job = {"program": "def f(x):\n    return 2 * x\n", "entry_point": "f", "args": ["(2,)"],
           "timeout": 5.0, "cpu_seconds": 5, "memory_bytes": 2**28, "file_bytes": 10**6,
           "output_bytes": 10**5, "result_bytes": 10**5}  # fmt: skip
    reply = sandbox_worker.run_job(job, features)
    assert judge(reply, [TestCase((2,), 4)], "f", job).passed
    hang = HOGS["closes its pipes, then sleeps"][0]  # pipes at end of file, process alive
    reply = sandbox_worker.run_job({**job, "program": hang, "timeout": 0.5}, features)
    assert judge(reply, [TestCase((2,), 4)], "f", job).status == "timed out"
