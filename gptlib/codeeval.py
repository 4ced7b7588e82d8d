"""Scoring programs by running them: hidden tests, the verdict on a run, the unbiased pass@k.

Taught in notebooks/11_codex.ipynb.

Chen et al. 2021 judge a model-written program by *functional correctness*: it passes if it
passes every hidden unit test (§2.1). From n programs sampled for a problem, c of which pass,
`pass_at_k` estimates the chance that at least one of k samples passes without bias (§2.1,
Figure 3). The programs run in separate, limited processes (gptlib/sandbox_worker.py), which
`gptlib.sandbox.Sandbox` keeps busy on every core; `judge` (here) gives the verdict.

**Who judges.** A test harness that runs inside the candidate's process can be fooled by the
candidate: it can exit with status 0 before any test runs, patch the harness, or return an
object whose ``__eq__`` always says True so that ``assert f(x) == y`` passes. So the sandboxed
process only *computes*: it calls the function on each test's arguments and sends back the
``repr`` of each result. This process, which alone knows the expected values, parses them with
`ast.literal_eval` (plain literals only: numbers, strings, lists, tuples, dicts, sets, None)
and compares. A program that exits early, crashes or prints garbage on the result pipe
reports too few or unparsable results, and fails. To fake a pass it would have to send the
right values, that is, solve the problem. The sandbox processes never see the expected
values (they are not in their memory), only the arguments.
"""

from __future__ import annotations

import ast
import json
import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "STOP_SEQUENCES",
    "ExecResult",
    "Sample",
    "TestCase",
    "is_literal",
    "judge",
    "pass_at_k",
    "pass_at_k_biased",
    "pass_at_k_exact",
    "sample_programs",
    "truncate_completion",
]


@dataclass(frozen=True)
class TestCase:
    """One hidden test: call the function with ``args``; it must return ``expected``.

    Taught in notebooks/11_codex.ipynb. Arguments and expected value are plain Python literals
    (numbers, strings, lists, tuples, dicts, sets, None), so they travel as text.
    """

    args: tuple
    expected: object
    __test__ = False  # not a pytest test class, despite the name

    def __post_init__(self) -> None:
        for what, value in (("args", self.args), ("expected", self.expected)):
            if not is_literal(value):
                raise ValueError(
                    f"TestCase {what} must be a plain Python literal (numbers, strings, lists, "
                    f"tuples, dicts, sets, None) that repr() writes and literal_eval reads "
                    f"back; got {value!r}"
                )
        if not isinstance(self.args, tuple):
            raise TypeError(f"TestCase args must be a tuple of arguments, got {self.args!r}")

    def call(self, function_name: str) -> str:
        """The call as source text, e.g. ``sum_even([1, 2, 3])``."""
        return f"{function_name}({', '.join(map(repr, self.args))})"


_ATOMS = (int, str, bool, type(None), bytes, complex)
_CONTAINERS = (list, tuple, set, frozenset)


def is_literal(value: object, depth: int = 0) -> bool:
    """True if ``repr(value)`` is a literal that `ast.literal_eval` reads back as an equal value.

    Taught in notebooks/11_codex.ipynb. Exact types only (a subclass of int may redefine ``__eq__``
    or ``__repr__``); floats must be finite (``repr(nan)`` is not a literal).
    """
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth > 50:
        return False
    if kind in _CONTAINERS:
        return all(is_literal(item, depth + 1) for item in value)
    if kind is dict:
        return all(is_literal(k, depth + 1) and is_literal(v, depth + 1) for k, v in value.items())
    return False


def _check_counts(n: int, c: int, k: int) -> None:
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if n < 1:
        raise ValueError(f"n (samples drawn) must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be between 0 and n={n}, got {c}")
    if not 1 <= k <= n:
        raise ValueError(
            f"k must be between 1 and n={n}, got {k}: pass@k needs at least k samples; "
            "draw more samples per problem or use a smaller k"
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c passed (Chen et al. 2021, §2.1).

    Taught in notebooks/11_codex.ipynb. pass@k is the chance that at least one of k samples passes.
    Drawing k of the n samples without replacement, the chance that all k fail is
    C(n-c, k) / C(n, k), so the estimate is 1 - C(n-c, k) / C(n, k); its mean over problems
    is an unbiased estimate of pass@k. The binomials overflow floats for large n, so it is
    computed as the product prod_{i=n-c+1}^{n} (1 - k/i) (the paper's Figure 3); when fewer
    than k samples failed, every draw of k holds a passing one and the result is exactly 1.
    Raises TypeError for non-integers and ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    """The same estimate as `pass_at_k`, as an exact fraction from the binomial definition.

    Taught in notebooks/11_codex.ipynb: it is what the product form computes, without rounding.
    """
    _check_counts(n, c, k)
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def pass_at_k_biased(n: int, c: int, k: int) -> float:
    """The naive estimate 1 - (1 - c/n)^k, which is biased (Chen et al. 2021, §2.1).

    Taught in notebooks/11_codex.ipynb. It plugs the observed pass rate c/n into the formula for k
    independent draws. Averaged over problems it underestimates pass@k, because
    1 - (1 - p)^k is concave in p; the chapter measures the bias by simulation.
    """
    _check_counts(n, c, k)
    return 1.0 - (1.0 - c / n) ** k


# Chen et al. 2021 (§3.2) stop sampling at these: the model would go on to write more code.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate_completion(completion: str, stop: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut a sampled completion at the first stop sequence (Chen et al. 2021, §3.2).

    Taught in notebooks/11_codex.ipynb. The model completes a function's body and then goes on with
    the next function of its training text; what follows the first ``"\\ndef"``,
    ``"\\nclass"``, ``"\\nif"``, ``"\\nprint"`` or ``"\\n#"`` is dropped.
    """
    if isinstance(stop, str):
        raise TypeError("stop must be a sequence of strings, e.g. ('\\ndef',), not one string")
    cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=len(completion))
    return completion[:cut]


@dataclass(frozen=True)
class Sample:
    """One sampled completion: its text cut at the first stop sequence, and its likelihood.

    Taught in notebooks/11_codex.ipynb. ``mean_logprob`` is the mean, over the ``n_tokens``
    generated tokens that spell ``text``, of each token's log-probability under the model's own
    distribution (temperature 1), in nats: the score Chen et al. 2021 (§3.3, Figure 7) rank
    samples by ("mean log-p").
    """

    text: str
    mean_logprob: float
    n_tokens: int


def sample_programs(
    model: object,
    tokenizer: object,
    prompt: str,
    n: int,
    temperature: float,
    max_new_tokens: int = 48,
    seed: int = 0,
    top_p: float | None = None,
) -> list[Sample]:
    """Draw n completions of a prompt in one batch with the KV cache, each cut at a stop sequence.

    Taught in notebooks/11_codex.ipynb. The n rows run as one batch of `GPT.generate` (KV cache,
    seeded generator), each ending when its text holds one of `STOP_SEQUENCES` (Chen et al.
    2021, §3.2) or after ``max_new_tokens`` tokens; the text is cut at the stop
    (`truncate_completion`) and the mean log-probability is taken over the tokens the kept text
    spans. ``model`` is a `gptlib.GPT`, ``tokenizer`` has encode/decode. Raises ValueError for
    n < 1 and whatever `GPT.generate` raises for bad sampling settings.
    """
    import torch

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples per prompt) must be a positive int, got {n!r}")
    ids = tokenizer.encode(prompt)
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids] * n), max_new_tokens, temperature=temperature, top_p=top_p,
            seed=seed, stop=list(STOP_SEQUENCES), tokenizer=tokenizer, return_logprobs=True,
        )  # fmt: skip
    samples = []
    for row, logprobs, length in zip(out.ids, out.logprobs, out.new_lengths.tolist(), strict=True):
        new = row[len(ids) : len(ids) + length].tolist()
        text = truncate_completion(tokenizer.decode(new))
        m = 1  # the fewest tokens whose text covers the kept completion
        while m < len(new) and len(tokenizer.decode(new[:m])) < len(text):
            m += 1
        samples.append(Sample(text, float(logprobs[:m].mean()), m))
    return samples


STATUSES = ("passed", "failed", "timed out", "crashed")


@dataclass(frozen=True)
class ExecResult:
    """What happened when a program ran against its hidden tests.

    Taught in notebooks/11_codex.ipynb. ``status`` is "passed" (every test returned the expected
    value), "failed" (the tests ran; a value was wrong or the function raised), "timed out"
    (the wall-clock or CPU limit ended it) or "crashed" (it did not get through its tests: a
    syntax error, an error at import, a missing function, an early exit, a signal, a limit on
    output); ``reason`` says which, in words.
    """

    status: str
    reason: str
    tests_passed: int
    n_tests: int
    output: str = ""  # the first 2,000 bytes the program printed
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True if every hidden test returned the expected value."""
        return self.status == "passed"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read_channel(reply: dict, n: int) -> tuple[dict[int, tuple[str, str]], int, str]:
    """The per-test records of a run, the count of lines the harness did not write, an error."""
    if "worker_error" in reply:
        return {}, 0, f"the sandbox failed: {reply['worker_error']}"
    values: dict[int, tuple[str, str]] = {}
    extra = 0
    for line in reply["results"]:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "setup_error" in record:
            return {}, 0, f"the sandbox failed: {record['setup_error']}"
        if isinstance(record, dict) and "program_error" in record and not values:
            return {}, 0, str(record["program_error"])
        test = record.get("test") if isinstance(record, dict) else None
        kind = "value" if isinstance(record, dict) and "value" in record else "error"
        if type(test) is int and 0 <= test < n and test not in values:
            if isinstance(record.get(kind), str):
                values[test] = (kind, record[kind])
                continue
        extra += 1
    return values, extra, ""


def _compare(values: dict, tests: Sequence[TestCase], entry_point: str) -> tuple[int, str]:
    """How many tests returned the expected value, and the first failure in words."""
    passed, failures = 0, []
    for i, case in enumerate(tests):
        kind, text = values.get(i, ("missing", ""))
        where = f"test {i + 1}: {case.call(entry_point)}"
        if kind == "error":
            failures.append(f"{where} raised {text}")
        elif kind == "value":
            try:
                got = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                failures.append(f"{where} returned {text[:80]}, not a plain value")
                continue
            if got == case.expected and type(got) is type(case.expected):
                passed += 1
            else:
                failures.append(f"{where} returned {got!r:.80}, expected {case.expected!r:.80}")
    return passed, (failures or [""])[0]


def judge(reply: dict, tests: Sequence[TestCase], entry_point: str, limits: dict) -> ExecResult:
    """Turn a sandbox worker's report of one run into an `ExecResult`, comparing values here.

    Taught in notebooks/11_codex.ipynb. A test passes when its value, read back as a literal, equals
    the expected one and has the same type. Every line on the result channel must be one the
    harness writes, each test reported once; anything else (lines the program wrote itself, an
    early exit, a value that is not a plain literal) is not a pass.
    """
    n = len(tests)
    values, extra, error = _read_channel(reply, n)
    passed, failure = _compare(values, tests, entry_point)
    cpu = reply.get("cpu_seconds", 0.0)
    if error:
        status, reason = "crashed", error
    elif reply["timed_out"]:
        status, reason = "timed out", f"it ran past the {limits['timeout']} s wall-clock limit"
    elif reply["signal"] in (signal.SIGXCPU, signal.SIGKILL) and cpu >= limits["cpu_seconds"] * 0.9:
        status, reason = "timed out", f"it used more than {limits['cpu_seconds']} s of CPU time"
    elif reply["cut"]:
        status, reason = "crashed", f"stopped because {reply['cut']}"
    elif extra:
        status, reason = "crashed", f"the result channel held {extra} line(s) not from the harness"
    elif len(values) < n:
        status = "crashed"
        if reply["exit_code"] is not None:
            reason = f"the program exited with code {reply['exit_code']}"
        else:
            reason = f"the program was killed by {_signal_name(reply['signal'])}"
        reason += f" after {len(values)} of {n} tests" + _SIGNAL_HINTS.get(reply["signal"], "")
    elif passed == n:
        status, reason = "passed", f"all {n} tests passed"
    else:
        status, reason = "failed", failure
        if "MemoryError" in failure:
            reason += f" (the memory limit is {limits['memory_bytes'] // 2**20} MB)"
    output, wall = reply.get("output", ""), reply.get("wall_seconds", 0.0)
    return ExecResult(status, reason, passed, n, output, cpu, wall)


_SIGNAL_HINTS = {
    signal.SIGSEGV: " (a C stack overflow, e.g. from deep recursion, ends this way)",
    signal.SIGXFSZ: " (it wrote a file over the file-size limit)",
}
