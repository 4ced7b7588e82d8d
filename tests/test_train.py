"""Tests for gptlib.train, gptlib.checkpoint and the `python -m gptlib.train` command line."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gptlib.train as train_module
from gptlib import GPT, GPTConfig
from gptlib.checkpoint import STATE_FILE
from gptlib.data import load_corpus, split
from gptlib.tokenizers import CharTokenizer
from gptlib.train import History, TrainConfig, evaluate, load_checkpoint, lr_at, main, train

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "train_config.json",
    "history.json",
    STATE_FILE,
    "checkpoint.json",
}


@pytest.fixture(scope="module")
def corpus() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    text = load_corpus("stories", max_chars=20_000)
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = split(torch.tensor(tokenizer.encode(text)))
    return tokenizer, train_ids, val_ids


def tiny_model(vocab_size: int, dropout: float = 0.0, n_layer: int = 2) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=n_layer, n_head=2, n_embd=32, block_size=16, vocab_size=vocab_size,
        dropout=dropout,
    )  # fmt: skip
    return GPT(config)


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(max_steps=20, batch_size=8, warmup_steps=4, lr=3e-3, eval_interval=5,
                    eval_batches=2, checkpoint_interval=10)  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def weights(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- schedule and config
def test_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr() -> None:
    config = TrainConfig(max_steps=1000, warmup_steps=100, lr=1e-3)
    lrs = [lr_at(step, config) for step in range(1000)]
    assert config.min_lr == pytest.approx(1e-4)  # GPT-3: down to 10% of the peak
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100], strict=True))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))  # then only falls
    assert lrs[550] == pytest.approx((1e-3 + 1e-4) / 2)  # cosine: half way down at half time
    assert lr_at(1000, config) == pytest.approx(1e-4) == lr_at(5000, config)
    assert min(lrs[100:]) >= 1e-4 - 1e-12


def test_no_warmup_starts_at_peak() -> None:
    assert lr_at(0, TrainConfig(max_steps=10, warmup_steps=0, lr=0.5)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"batch_size": -1}, "batch_size"),
        ({"max_steps": 10, "warmup_steps": 20}, "warmup_steps"),
        ({"lr": 1e-3, "min_lr": 1e-2}, "min_lr"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"eval_interval": 0}, "eval_interval"),
    ],
)
def test_bad_train_config_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_train_config_round_trips_through_json() -> None:
    config = TrainConfig(max_steps=7, warmup_steps=2, betas=(0.8, 0.9), grad_clip=None)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"max_stepz": 3})


# ---------------------------------------------------------------------- training
def test_loss_decreases_and_history_has_every_field(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size)
    before = evaluate(model, val_ids, 8, 16, n_batches=4, seed=3)
    history = train(model, train_ids, val_ids, tiny_config(max_steps=40), progress=False)
    after = evaluate(model, val_ids, 8, 16, n_batches=4, seed=3)
    assert after < before - 0.5, (before, after)
    assert history.steps == list(range(1, 41))
    assert len(history.train_loss) == len(history.lr) == len(history.grad_norm) == 40
    assert history.eval_steps == list(range(5, 41, 5))
    assert len(history.val_loss) == len(history.eval_train_loss) == 8
    assert history.val_loss[-1] < history.val_loss[0]
    assert history.lr == [lr_at(step, tiny_config(max_steps=40)) for step in range(40)]
    assert history.seconds > 0


def test_evaluate_is_deterministic_and_leaves_train_mode(corpus) -> None:
    tokenizer, _, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size, dropout=0.2).train()
    first = evaluate(model, val_ids, 4, 16, n_batches=3, seed=7)
    assert evaluate(model, val_ids, 4, 16, n_batches=3, seed=7) == first
    assert model.training


def test_same_seed_same_weights(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus
    runs = []
    for _ in range(2):
        model = tiny_model(tokenizer.vocab_size, dropout=0.1)
        train(model, train_ids, val_ids, tiny_config(max_steps=8), progress=False)
        runs.append(weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_checkpoint_files_are_written_without_leftover_temp_files(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size)
    history = train(model, train_ids, val_ids, tiny_config(), tmp_path / "run", progress=False,
                    tokenizer=tokenizer)  # fmt: skip
    assert {p.name for p in (tmp_path / "run").iterdir()} == CHECKPOINT_FILES
    loaded, loaded_tokenizer, loaded_history = load_checkpoint(tmp_path / "run")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights(model).items())
    assert loaded_tokenizer.chars == tokenizer.chars
    assert loaded_history == history
    assert not loaded.training


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Send this process a real Ctrl-C (SIGINT) as training step `step` (1-based) begins."""
    real_lr_at = train_module.lr_at

    def lr_at_with_interrupt(index: int, config: TrainConfig) -> float:
        if index == step - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr_at(index, config)

    monkeypatch.setattr(train_module, "lr_at", lr_at_with_interrupt)


def test_ctrl_c_saves_and_resume_reaches_the_uninterrupted_weights(
    corpus, tmp_path, monkeypatch
) -> None:
    tokenizer, train_ids, val_ids = corpus
    config = tiny_config(max_steps=20, checkpoint_interval=4)
    straight = tiny_model(tokenizer.vocab_size, dropout=0.1)
    straight_history = train(straight, train_ids, val_ids, config, progress=False)

    out = tmp_path / "run"
    _interrupt_at_step(monkeypatch, 7)  # step 7 still finishes, is saved, and training stops
    interrupted = train(tiny_model(tokenizer.vocab_size, dropout=0.1), train_ids, val_ids, config,
                        out, progress=False, tokenizer=tokenizer)  # fmt: skip
    monkeypatch.undo()
    assert interrupted.steps[-1] == 7
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES

    torch.manual_seed(123)  # resume must not depend on the global RNG state at the time
    resumed_model = tiny_model(tokenizer.vocab_size, dropout=0.1)  # fresh weights, overwritten
    resumed = train(resumed_model, train_ids, val_ids, config, out, resume=True, progress=False,
                    tokenizer=tokenizer)  # fmt: skip
    for name, value in weights(straight).items():
        torch.testing.assert_close(resumed_model.state_dict()[name], value)
    assert resumed.steps == straight_history.steps
    assert resumed.train_loss == pytest.approx(straight_history.train_loss, abs=1e-6)
    assert resumed.val_loss == pytest.approx(straight_history.val_loss, abs=1e-6)


def test_a_crash_loses_only_the_steps_since_the_last_checkpoint(
    corpus, tmp_path, monkeypatch
) -> None:
    tokenizer, train_ids, val_ids = corpus
    config = tiny_config(max_steps=20, checkpoint_interval=10)
    straight = tiny_model(tokenizer.vocab_size)
    train(straight, train_ids, val_ids, config, progress=False)

    real_lr_at = train_module.lr_at

    def crashing_lr_at(index: int, config: TrainConfig) -> float:
        if index == 13:
            raise RuntimeError("power cut")  # in step 14, after the checkpoint of step 10
        return real_lr_at(index, config)

    monkeypatch.setattr(train_module, "lr_at", crashing_lr_at)
    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, config, tmp_path / "run",
              progress=False)  # fmt: skip
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "history.json").read_text())["steps"][-1] == 10
    resumed_model = tiny_model(tokenizer.vocab_size)
    history = train(resumed_model, train_ids, val_ids, config, tmp_path / "run", resume=True,
                    progress=False)  # fmt: skip
    assert history.steps == list(range(1, 21)) and history.eval_steps == [5, 10, 15, 20]
    for name, value in weights(straight).items():
        torch.testing.assert_close(resumed_model.state_dict()[name], value)


def test_resume_without_checkpoint_or_over_one_is_refused(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint to resume"):
        train(model, train_ids, val_ids, tiny_config(), tmp_path / "none", resume=True,
              progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="needs the out_dir"):
        train(model, train_ids, val_ids, tiny_config(), resume=True, progress=False)
    train(model, train_ids, val_ids, tiny_config(max_steps=10), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        train(model, train_ids, val_ids, tiny_config(max_steps=10), tmp_path / "run",
              progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="different model .*n_layer"):
        train(tiny_model(tokenizer.vocab_size, n_layer=1), train_ids, val_ids,
              tiny_config(max_steps=10), tmp_path / "run", resume=True, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="other settings .*batch_size"):
        train(model, train_ids, val_ids, tiny_config(max_steps=10, batch_size=4), tmp_path / "run",
              resume=True, progress=False)  # fmt: skip


def test_weights_from_another_step_are_detected(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size)
    train(model, train_ids, val_ids, tiny_config(max_steps=10), tmp_path / "run", progress=False)
    tiny_model(tokenizer.vocab_size).save(tmp_path / "run")  # as if killed between two writes
    with pytest.raises(ValueError, match="model.safetensors is not the file this checkpoint was"):
        train(model, train_ids, val_ids, tiny_config(max_steps=20), tmp_path / "run", resume=True,
              progress=False)  # fmt: skip


def test_bad_data_is_refused(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus
    model = tiny_model(tokenizer.vocab_size)
    with pytest.raises(ValueError, match="longer than the model's block_size"):
        train(model, train_ids, val_ids, tiny_config(block_size=64), progress=False)
    with pytest.raises(ValueError, match="val_data must be a 1-D tensor"):
        train(model, train_ids, val_ids[:10], tiny_config(), progress=False)


def test_load_checkpoint_of_a_missing_folder_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m gptlib.train"):
        load_checkpoint(tmp_path / "nothing")


def test_history_truncate_drops_later_entries() -> None:
    history = History(steps=[1, 2, 3], train_loss=[3.0, 2.0, 1.0], lr=[1, 1, 1],
                      grad_norm=[1, 1, 1], eval_steps=[2], val_loss=[2.5], eval_train_loss=[2.4])  # fmt: skip
    history.truncate(1)
    assert history.steps == [1] and history.train_loss == [3.0] and history.eval_steps == []


# ---------------------------------------------------------------------- command line
CLI_TINY = ["--corpus", "stories", "--max-chars", "5000", "--n-layer", "1", "--n-head", "2",
            "--n-embd", "16", "--block-size", "16", "--batch-size", "4", "--warmup-steps", "2",
            "--eval-interval", "3", "--eval-batches", "2", "--no-progress"]  # fmt: skip


def test_cli_trains_resumes_and_extends(tmp_path) -> None:
    out = str(tmp_path / "cli")
    history = main(["--out", out, "--max-steps", "6", *CLI_TINY])
    assert history.steps[-1] == 6
    assert {p.name for p in Path(out).iterdir()} == CHECKPOINT_FILES | {"command.json"}
    assert "--max-steps 6" in json.loads((Path(out) / "command.json").read_text())["command"]
    history = main(["--out", out, "--max-steps", "9", "--resume", *CLI_TINY])
    assert history.steps == list(range(1, 10))
    main(["--out", out, "--max-steps", "9", "--resume", "--final-weights-only", *CLI_TINY])
    assert not (Path(out) / STATE_FILE).exists()
    model, tokenizer, _ = load_checkpoint(out)
    assert model.config.vocab_size == tokenizer.vocab_size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corpus", "wikipedia"], "Known corpora: 'python-docs', 'python-stdlib', 'stories'"),
        (["--resume"], "holds no checkpoint to resume"),
        (["--n-head", "3"], "not divisible by n_head"),
    ],
)
def test_cli_bad_input_gives_a_clear_error(tmp_path, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x"), "--max-steps", "2", *CLI_TINY, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_out_dir_holding_another_checkpoint(tmp_path, capsys) -> None:
    out = str(tmp_path / "cli")
    main(["--out", out, "--max-steps", "3", *CLI_TINY])
    for extra, message in ([], "already holds a checkpoint"), (["--resume"], "different model"):
        with pytest.raises(SystemExit):
            main(["--out", out, "--max-steps", "3", *extra, *CLI_TINY, "--n-layer", "2"])
        assert message in capsys.readouterr().err


def test_python_dash_m_gptlib_train_runs(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gptlib.train", "--out", str(tmp_path / "m"), "--max-steps", "3",
         *CLI_TINY[:-1], "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final val loss" in result.stdout
    assert "step 3: train loss" in result.stdout + result.stderr


def test_repeat_passages_repeats_a_prefix_of_the_window_in_the_chosen_rows() -> None:
    x = torch.arange(200).view(10, 20)
    y = x + 1
    generator = torch.Generator().manual_seed(0)
    new_x, new_y = train_module.repeat_passages(x, y, 0.5, generator)
    assert torch.equal(new_x[:, 1:], new_y[:, :-1])  # targets are still the next tokens
    changed = [row for row in range(10) if not torch.equal(new_x[row], x[row])]
    assert 0 < len(changed) < 10
    for row in changed:
        period = next(p for p in range(5, 11) if torch.equal(new_x[row, p:], new_x[row, :-p]))
        assert torch.equal(new_x[row, :period], x[row, :period])
    assert train_module.repeat_passages(x, y, 0.0, generator)[0] is x


def test_repeat_fraction_is_validated_and_keeps_runs_reproducible(corpus) -> None:
    with pytest.raises(ValueError, match="repeat_fraction"):
        TrainConfig(repeat_fraction=1.5)
    tokenizer, train_ids, val_ids = corpus
    runs = []
    for _ in range(2):
        model = tiny_model(tokenizer.vocab_size)
        runs.append(train(model, train_ids, val_ids, tiny_config(max_steps=5, repeat_fraction=0.5),
                          progress=False).train_loss)  # fmt: skip
    assert runs[0] == runs[1]


def test_cli_position_overrides_the_preset(tmp_path, capsys) -> None:
    main(["--out", str(tmp_path / "rot"), "--max-steps", "2", *CLI_TINY, "--position", "rotary"])
    model, _, _ = load_checkpoint(tmp_path / "rot")
    assert model.config.position == "rotary" and model.pos_emb is None
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--max-steps", "2", *CLI_TINY, "--position", "wavy"])
    assert "position='wavy' is unknown" in capsys.readouterr().err
