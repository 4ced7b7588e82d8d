"""Training records in data/training_runs agree with data/README.md and with what they claim.

A training record is the small part of a run that a chapter plots (its history and command),
kept without the weights. Chapter 15 draws the formation of induction heads from
data/training_runs/char_python_docs_induction, a re-run of the shipped checkpoint's command with
`--track induction`; these tests check that the record is whole, parses, is the run the README
documents, and differs from the checkpoint's command only in what the README says.
"""

import json
import re
import shlex

import pytest
from training_helpers import ROOT

from gptlib.interpret import induction_probe
from gptlib.train import History, TrainConfig

README = ROOT / "data" / "README.md"
RUN = "char_python_docs_induction"
FOLDER = ROOT / "data" / "training_runs" / RUN
CHECKPOINT = ROOT / "data" / "checkpoints" / "char_python_docs"
FILES = {"command.json", "config.json", "history.json", "train_config.json"}
# The flags in which the record's command may differ from the checkpoint's: where it writes, the
# threads, how often it evaluates and saves, and the tracker. None of them changes the batches,
# the initialisation or the updates (evaluation draws from its own seeded generator).
ALLOWED_CHANGES = {"--out", "--threads", "--eval-interval", "--checkpoint-interval", "--track"}


def _readme_figure(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^## training_runs/{RUN}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert section, f"data/README.md has no '## training_runs/{RUN}' section"
    match = re.search(rf"\*\*{name}:\*\*\s*`?([^`\n]+)`?", section.group(0))
    assert match, f"data/README.md's section on {RUN} does not state the {name}"
    return match.group(1).strip()


def _flags(command: str) -> dict[str, str | None]:
    """`--flag value` pairs of a command line (a flag without a value maps to None)."""
    words = shlex.split(command)[3:]  # after "python -m gptlib.train"
    flags: dict[str, str | None] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            following = words[i + 1] if i + 1 < len(words) else "--"
            flags[word] = None if following.startswith("--") else following
    return flags


def _json(name: str):
    return json.loads((FOLDER / name).read_text(encoding="utf-8"))


def test_the_record_holds_only_small_json_files() -> None:
    names = {path.name for path in FOLDER.iterdir()}
    assert names == FILES, f"unexpected files {names ^ FILES}: keep records only, not weights"
    size = sum(path.stat().st_size for path in FOLDER.iterdir())
    assert size < 1_000_000, f"the record is {size / 1e6:.2f} MB; keep it under 1 MB"


def test_readme_gives_the_command_and_steps_of_the_record() -> None:
    command = _json("command.json")["command"]
    assert _readme_figure("Command") == command
    history = History.from_dict(_json("history.json"))
    assert int(_readme_figure("Steps").split()[0].replace(",", "")) == history.steps[-1]
    assert float(_readme_figure("Final validation loss").split()[0]) == pytest.approx(
        history.val_loss[-1], abs=5e-4
    )


def test_the_command_is_the_checkpoints_own_plus_tracking() -> None:
    record = _flags(_json("command.json")["command"])
    shipped = _flags(json.loads((CHECKPOINT / "command.json").read_text())["command"])
    changed = {
        flag for flag in record.keys() | shipped.keys() if record.get(flag) != shipped.get(flag)
    }
    assert changed <= ALLOWED_CHANGES, (
        f"the record's command also changes {changed - ALLOWED_CHANGES}"
    )
    assert record["--out"] == f"data/training_runs/{RUN}" and record["--track"] == "induction"


def test_train_config_matches_the_command_and_the_history() -> None:
    flags = _flags(_json("command.json")["command"])
    config = TrainConfig.from_dict(_json("train_config.json"))
    assert config.track == ("induction",)
    assert config.max_steps == int(flags["--max-steps"])
    assert config.eval_interval == int(flags["--eval-interval"])
    assert config.seed == int(flags["--seed"]) and config.lr == float(flags["--lr"])
    assert config.repeat_fraction == float(flags["--repeat-fraction"])
    history = History.from_dict(_json("history.json"))
    assert history.steps == list(range(1, config.max_steps + 1)), "the run stopped early"
    expected = list(range(config.eval_interval, config.max_steps + 1, config.eval_interval))
    assert history.eval_steps[-len(expected) :] == expected


def test_every_evaluation_recorded_every_induction_metric() -> None:
    history = History.from_dict(_json("history.json"))
    assert set(history.tracked) == {f"induction/{key}" for key in _probe_keys()}
    for name, values in history.tracked.items():
        assert len(values) == len(history.eval_steps), name
        assert all(isinstance(v, float) and v == v for v in values), f"{name} holds a non-number"
    for name in ("induction_score", "previous_token_score", "second_copy_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in history.tracked[f"induction/{name}"]), name


def _probe_keys() -> list[str]:
    """The names induction_probe returns, from a run on a tiny untrained model."""
    import torch

    from gptlib import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=8
    )
    return list(induction_probe(GPT(config).eval(), seq_len=4, batch=2, n_candidates=4))
