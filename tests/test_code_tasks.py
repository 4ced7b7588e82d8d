"""Tests for gptlib.code_tasks: the seeded problem family, its held-out split and its tests."""

from __future__ import annotations

import doctest
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from gptlib.code_grammar import HELD_OUT_FAMILIES
from gptlib.code_tasks import EVAL_PER_FAMILY, CodeTask, make_tasks, training_text
from gptlib.codeeval import STOP_SEQUENCES, sample_programs, truncate_completion
from gptlib.data import CORPORA, load_corpus
from gptlib.sandbox import Sandbox
from gptlib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN, EVAL = make_tasks(0)


def _function(task: CodeTask):  # noqa: ANN202  (our own reference code, run in this process)
    namespace: dict = {}
    exec(task.text, namespace)  # noqa: S102
    return namespace[task.entry_point]


def test_sizes_and_families() -> None:
    assert 300 <= len(TRAIN)
    assert 30 <= len(EVAL) <= 60
    families = Counter(task.family for task in TRAIN)
    assert len(families) >= 10
    assert min(families.values()) >= 10  # every trained family is taught by many problems
    held = Counter(task.family for task in EVAL)
    assert set(held) == set(families) | set(HELD_OUT_FAMILIES)
    assert not set(families) & set(HELD_OUT_FAMILIES)  # the chains are never trained on
    assert all(held[family] == EVAL_PER_FAMILY for family in families)


def test_chained_problems_chain_three_parts_that_training_chains_two_at_a_time() -> None:
    chains = [task for task in EVAL if task.family == "chain_arithmetic"]
    assert chains and all(task.solution.count("\n") == 3 for task in chains)  # n = ..; n = ..
    assert max(task.solution.count("\n") for task in TRAIN if task.family == "arithmetic") == 2
    combined = [task for task in EVAL if task.family == "filter_map_aggregate"]
    assert combined and all(" for x in numbers if " in task.solution for task in combined)
    assert all(task.solution.lstrip().startswith(("return sum(", "return max(", "return min("))
               for task in combined)  # fmt: skip


def test_the_same_seed_makes_the_same_problems_and_another_seed_others() -> None:
    make_tasks.cache_clear()
    again_train, again_eval = make_tasks(0)
    assert (again_train, again_eval) == (TRAIN, EVAL)
    assert make_tasks(1)[1] != EVAL
    with pytest.raises(TypeError):
        make_tasks("0")  # type: ignore[arg-type]


def test_no_evaluation_problem_appears_in_the_training_text() -> None:
    text = training_text()
    train_names = {task.entry_point for task in TRAIN}
    for task in EVAL:
        assert task.entry_point not in train_names
        assert f"def {task.entry_point}(" not in text
        assert task.prompt not in text
        assert task.solution not in text  # not even its body, under another name
    assert len({task.entry_point for task in TRAIN + EVAL}) == len(TRAIN) + len(EVAL)


def test_the_corpus_is_the_training_text() -> None:
    assert "code-tasks" in CORPORA
    text = load_corpus("code-tasks")
    assert text == training_text()
    assert text.startswith(TRAIN[0].text)
    assert text.count("\ndef ") == len(TRAIN) - 1


def test_prompts_follow_humaneval_format() -> None:
    for task in TRAIN + EVAL:
        header, *_ = task.prompt.splitlines()
        assert header.startswith(f"def {task.entry_point}(") and header.endswith(":")
        assert task.prompt.count('"""') == 2 and task.prompt.endswith('    """\n')
        assert task.prompt.count("    >>> ") == 2
        assert all(line.startswith("    ") for line in task.solution.splitlines())
        assert task.solution.endswith("\n")


def test_docstring_examples_are_right_and_differ_from_the_hidden_tests() -> None:
    parser = doctest.DocTestParser()
    for task in TRAIN + EVAL:
        function = _function(task)
        examples = parser.get_examples(function.__doc__)
        assert len(examples) == 2
        for example in examples:
            value = eval(example.source, {task.entry_point: function})  # noqa: S307
            assert repr(value) + "\n" == example.want, (task.entry_point, example.source)
        shown = {example.source.strip() for example in examples}
        assert not shown & {case.call(task.entry_point) for case in task.tests}


def _random_argument(annotation: str, rng: random.Random) -> object:
    if annotation == "list[int]":
        return [rng.randint(-10, 20) for _ in range(rng.randint(0, 8))]
    if annotation == "int":
        return rng.randint(0, 99_999) if rng.random() < 0.5 else rng.randint(-30, 40)
    alphabet = "abcdefghijklmnopqrstuvwxyz aeiouABCDKT0123456789 "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))


def _same_function(first, second, annotation: str) -> bool:  # noqa: ANN001
    rng = random.Random(0)
    for _ in range(300):
        args = (_random_argument(annotation, rng),)
        try:
            if first(*args) != second(*args):
                return False
        except ValueError:  # e.g. int('-') for a negative n in the digit problems
            continue
    return True


def test_hidden_tests_reject_every_other_problem_of_the_family() -> None:
    # Unless the other problem computes the same function (then it is a right answer).
    functions = {task.entry_point: _function(task) for task in TRAIN + EVAL}
    rejected = 0
    for task in EVAL:
        signature = task.prompt.splitlines()[0].split("(", 1)[1]
        annotation = signature.split(": ", 1)[1].split(")", 1)[0]
        for other in TRAIN + EVAL:
            same_kind = other.prompt.splitlines()[0].split("(", 1)[1] == signature
            if other is task or other.family != task.family or not same_kind:
                continue
            wrong = functions[other.entry_point]
            if any(wrong(*case.args) != case.expected for case in task.tests):
                rejected += 1
            else:
                assert _same_function(wrong, functions[task.entry_point], annotation), (
                    f"{task.entry_point}'s tests do not reject {other.entry_point}"
                )
    assert rejected > 1000


def test_test_code_is_humaneval_check_function() -> None:
    task = EVAL[0]
    code = task.test_code()
    assert code.startswith("def check(candidate):\n    assert candidate(")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102
    namespace["check"](_function(task))  # the reference passes its own asserts
    with pytest.raises(AssertionError):
        namespace["check"](lambda *args: None)


def test_reference_solutions_pass_their_hidden_tests_in_the_sandbox() -> None:
    tasks = list(EVAL) + list(TRAIN[::4])
    with Sandbox(timeout=5.0) as sandbox:
        results = sandbox.run_many([(t.text, t.entry_point, t.tests) for t in tasks])
        # the prompt alone (no body) is not a solution
        prompt_only = sandbox.run_many([(t.prompt, t.entry_point, t.tests) for t in EVAL[:5]])
    failures = [
        (t.entry_point, r.reason) for t, r in zip(tasks, results, strict=True) if not r.passed
    ]
    assert not failures
    assert not any(r.passed for r in prompt_only)


def _greedy_programs(model: torch.nn.Module, tokenizer, tasks) -> list[str]:  # noqa: ANN001
    programs, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 steps: a second thread only waits, on a busy machine a lot
    try:
        for task in tasks:
            ids = tokenizer.encode(task.prompt)
            out = model.generate(torch.tensor([ids]), 48, temperature=0.0)
            completion = tokenizer.decode(out[0, len(ids) :].tolist())
            programs.append(task.prompt + truncate_completion(completion))
    finally:
        torch.set_num_threads(threads)
    return programs


def test_the_shipped_code_model_solves_held_out_problems_greedily() -> None:
    # data/README.md: greedy decoding solves 15 of the 48; a margin for other CPUs' rounding.
    model, tokenizer, _ = load_checkpoint(ROOT / "data" / "checkpoints" / "bpe_code_tasks")
    programs = _greedy_programs(model, tokenizer, EVAL)
    with Sandbox() as sandbox:
        results = sandbox.run_many(
            [(p, t.entry_point, t.tests) for p, t in zip(programs, EVAL, strict=True)]
        )
    solved = {t.family for t, r in zip(EVAL, results, strict=True) if r.passed}
    assert 10 <= sum(r.passed for r in results) <= 30
    assert "arithmetic" in solved and not solved & set(HELD_OUT_FAMILIES)  # chains stay hard


def test_sample_programs_stops_each_row_and_scores_the_kept_tokens() -> None:
    model, tokenizer, _ = load_checkpoint(ROOT / "data" / "checkpoints" / "bpe_code_tasks")
    task = next(t for t in EVAL if t.family == "chain_arithmetic")  # a hard one: samples vary
    samples = sample_programs(model, tokenizer, task.prompt, n=6, temperature=1.0, seed=3)
    assert len(samples) == 6 and len({s.text for s in samples}) > 1
    assert samples == sample_programs(model, tokenizer, task.prompt, 6, 1.0, seed=3)
    ids = tokenizer.encode(task.prompt)
    out = model.generate(
        torch.tensor([ids] * 6),
        48,
        temperature=1.0,
        seed=3,
        stop=list(STOP_SEQUENCES),
        tokenizer=tokenizer,
        return_logprobs=True,
    )
    for row, logprobs, s in zip(out.ids, out.logprobs, samples, strict=True):
        new = row[len(ids) :].tolist()
        assert truncate_completion(s.text) == s.text and s.text.startswith("    ")
        # the first n_tokens tokens are the fewest that spell the kept text
        assert tokenizer.decode(new[: s.n_tokens]).startswith(s.text)
        assert len(tokenizer.decode(new[: s.n_tokens - 1])) < len(s.text)
        assert math.isclose(s.mean_logprob, logprobs[: s.n_tokens].mean().item(), rel_tol=1e-6)
        assert s.mean_logprob < 0
    with pytest.raises(ValueError, match="n"):
        sample_programs(model, tokenizer, task.prompt, n=0, temperature=1.0)


@pytest.mark.parametrize("name", ["bpe_code_tasks", "bpe_code_tasks_from_stdlib"])
def test_stored_samples_are_complete_and_their_verdicts_reproduce(name: str) -> None:
    # notebooks/11_codex.ipynb reads these records; data/README.md gives their commands.
    record = json.loads((ROOT / "data" / "codex_samples" / f"{name}.json").read_text())
    assert record["checkpoint"] == name and record["n"] == 20
    assert f"data/checkpoints/{name} " in record["command"]
    assert record["command"] in (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    by_id = {task.task_id: task for task in EVAL}
    jobs, statuses = [], []
    for run in record["runs"]:
        assert [p["task_id"] for p in run["problems"]] == [t.task_id for t in EVAL]
        for problem in run["problems"]:
            assert len(problem["samples"]) == record["n"]
            task = by_id[problem["task_id"]]
            for _, status, mean_logprob in problem["samples"]:
                assert status in ("passed", "failed", "timed out", "crashed") and mean_logprob <= 0
            text, status, _ = problem["samples"][0]  # re-run one sample of each problem and run
            if status != "timed out":  # (a time limit depends on the machine's load)
                jobs.append((task.prompt + text, task.entry_point, task.tests))
                statuses.append(status)
    with Sandbox(timeout=2.0) as sandbox:
        assert [r.status for r in sandbox.run_many(jobs)] == statuses
