"""Tests for gptlib.train: the schedule, the loop, evaluation, checkpoints and exact resume.

The command line is tested in test_train_cli.py, kills during a save in test_checkpoint.py,
several processes in test_distributed.py.
"""

import json
import os
import signal

import numpy as np
import pytest
import torch
from training_helpers import tiny_config, tiny_model, weights

import gptlib.train as train_module
from gptlib.alignment import SFTData
from gptlib.checkpoint import STATE_FILE
from gptlib.data import load_corpus, split
from gptlib.tokenizers import CharTokenizer
from gptlib.train import History, TrainConfig, evaluate, load_checkpoint, lr_at, train

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


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"lr": "1e-3"}, TypeError, r"lr='1e-3' is a str, but lr must be a finite number > 0"),
        ({"weight_decay": -0.1}, ValueError, r"weight_decay=-0\.1 is out of range"),
        ({"weight_decay": float("nan")}, ValueError, r"weight_decay=nan is out of range"),
        ({"betas": (0.9,)}, ValueError, r"betas=\(0\.9,\) must be two numbers in \[0, 1\)"),
        ({"betas": (0.9, 1.5)}, ValueError, r"betas=1\.5 is out of range"),
        ({"betas": "0.9"}, ValueError, r"betas='0\.9' must be two numbers"),
        ({"grad_clip": float("nan")}, ValueError, r"grad_clip=nan is out of range"),
        ({"warmup_steps": 2.5}, TypeError, r"warmup_steps=2\.5 is a float"),
        ({"checkpoint_interval": 2.5}, TypeError, r"checkpoint_interval=2\.5 is a float"),
        ({"checkpoint_interval": "5"}, TypeError, r"checkpoint_interval='5' is a str"),
        ({"block_size": 4.0}, TypeError, r"block_size=4\.0 is a float"),
        ({"seed": "0"}, TypeError, r"seed='0' is a str"),
        ({"seed": 2**70}, ValueError, r"seed=\d+ is out of range; seed must be below 2\*\*63"),
        ({"device": 0}, TypeError, r"device=0 must be a string such as 'cpu'"),
        ({"compile": "no"}, TypeError, r"compile='no' is a str, but compile must be True or False"),
        ({"max_steps": 3.0}, TypeError, r"max_steps=3\.0 is a float"),
    ],
)
def test_every_train_config_field_is_checked_with_its_name(settings, error, message) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(**settings)


def test_train_config_takes_numpy_integers_and_one_tracker_named_alone() -> None:
    config = TrainConfig(max_steps=np.int64(30), eval_batches=np.int32(2), lr=np.float32(0.5))
    assert (config.max_steps, config.eval_batches, config.warmup_steps) == (30, 2, 3)
    assert type(config.max_steps) is int and type(config.lr) is float
    assert TrainConfig(track="induction").track == ("induction",)  # not its characters
    with pytest.raises(TypeError, match="a TrainConfig is read from a dict of fields, got list"):
        TrainConfig.from_dict([])
    with pytest.raises(ValueError, match=r"unknown History fields \['foo'\]"):
        History.from_dict({"foo": 1})


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


def _interrupt_at_step(
    monkeypatch: pytest.MonkeyPatch, step: int, signum: int = signal.SIGINT
) -> None:
    """Send this process a real Ctrl-C (SIGINT, or signum) as training step `step` (1-based)
    begins."""
    real_lr_at = train_module.lr_at

    def lr_at_with_interrupt(index: int, config: TrainConfig) -> float:
        if index == step - 1:
            os.kill(os.getpid(), signum)
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
    with pytest.raises(
        ValueError, match=r"(model\.safetensors|config\.json) is not the file this checkpoint was"
    ):
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


# ---------------------------------------------------------------------- settings of a run
@pytest.mark.parametrize(("max_steps", "warmup"), [(5, 0), (40, 4), (999, 99), (5000, 100)])
def test_default_warmup_is_a_tenth_of_the_run_capped_at_100(max_steps, warmup) -> None:
    assert TrainConfig(max_steps=max_steps).warmup_steps == warmup
    with pytest.raises(ValueError, match="warmup_steps=100 must be between 0 and max_steps=40"):
        TrainConfig(max_steps=40, warmup_steps=100)  # an explicit one is never changed


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"dtype": "float8"}, "dtype='float8' is unknown"), ({"grad_accum_steps": 0}, "grad_accum"),
     ({"track": ("nonsense",)}, "unknown tracker")],
)  # fmt: skip
def test_new_settings_are_validated(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_gradient_accumulation_gives_the_losses_of_one_big_batch(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus
    runs = {}
    for batch, accum in ((8, 1), (2, 4)):
        model = tiny_model(tokenizer.vocab_size)
        config = tiny_config(max_steps=4, batch_size=batch, grad_accum_steps=accum)
        runs[batch] = (train(model, train_ids, val_ids, config, progress=False), weights(model))
    for batch in (2,):
        assert runs[batch][0].train_loss == pytest.approx(runs[8][0].train_loss, rel=1e-5)
        assert runs[batch][0].val_loss == pytest.approx(runs[8][0].val_loss, rel=1e-5)
        for name, value in runs[8][1].items():
            torch.testing.assert_close(runs[batch][1][name], value, rtol=1e-4, atol=1e-5)


class MaskedPairs:
    """A BatchSource like SFT's: the first half of every window is a prompt, left out of the loss."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def get_batch(self, batch_size, block_size, generator, device="cpu"):
        starts = torch.randint(len(self.tokens) - block_size, (batch_size,), generator=generator)
        window = torch.stack([self.tokens[s : s + block_size + 1] for s in starts.tolist()])
        x, y = window[:, :-1].clone(), window[:, 1:].clone()
        prompt = torch.randint(1, block_size, (batch_size,), generator=generator)
        y[torch.arange(block_size)[None, :] < prompt[:, None]] = -1
        return x.to(device), y.to(device)


def test_a_batch_source_with_masked_targets_trains_and_splits_exactly(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus
    source, val = MaskedPairs(train_ids), MaskedPairs(val_ids)
    runs = []
    for batch, accum in ((8, 1), (2, 4)):  # prompts of random length: micro-batches differ
        model = tiny_model(tokenizer.vocab_size)
        config = tiny_config(max_steps=5, batch_size=batch, grad_accum_steps=accum)
        runs.append(train(model, source, val, config, progress=False))
    assert runs[0].train_loss == pytest.approx(runs[1].train_loss, rel=1e-5)
    # The loss is the mean over the targets that count, as one forward pass computes it.
    model = tiny_model(tokenizer.vocab_size)
    x, y = source.get_batch(8, 16, torch.Generator().manual_seed(0))
    expected = torch.nn.functional.cross_entropy(
        model(x).logits.reshape(-1, tokenizer.vocab_size), y.reshape(-1), ignore_index=-1
    )
    assert evaluate(model, source, 8, 16, n_batches=1, seed=0) == pytest.approx(
        float(expected.detach())
    )


def test_a_source_may_send_batches_narrower_than_the_block(corpus) -> None:
    # SFTData sends as many columns as the longest example drawn needs, not block_size.
    tokenizer, train_ids, _ = corpus
    ids = train_ids.tolist()
    examples = [(ids[i : i + 3], ids[i + 3 : i + 3 + i % 7 + 1]) for i in range(0, 400, 10)]
    source = SFTData(examples, pad_id=0)
    x, _ = source.get_batch(8, 16, torch.Generator().manual_seed(0))
    assert x.shape[1] < 16
    runs = []
    for batch, accum in ((8, 1), (2, 4)):
        model = tiny_model(tokenizer.vocab_size)
        config = tiny_config(max_steps=4, batch_size=batch, grad_accum_steps=accum)
        runs.append((train(model, source, source, config, progress=False), weights(model)))
    assert runs[0][0].train_loss == pytest.approx(runs[1][0].train_loss, rel=1e-5)
    assert runs[0][0].val_loss == pytest.approx(runs[1][0].val_loss, rel=1e-5)
    for name, value in runs[0][1].items():
        torch.testing.assert_close(runs[1][1][name], value, rtol=1e-4, atol=1e-5)


def test_a_memory_mapped_token_array_trains_like_the_tensor(corpus, tmp_path) -> None:
    import numpy as np

    tokenizer, train_ids, val_ids = corpus
    path = tmp_path / "ids.bin"
    train_ids.numpy().astype(np.uint16).tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r")
    config = tiny_config(max_steps=4)
    a = train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, config, progress=False)
    b = train(tiny_model(tokenizer.vocab_size), mapped, val_ids, config, progress=False)
    assert a.train_loss == b.train_loss


def test_something_that_is_no_batch_source_is_refused(corpus) -> None:
    tokenizer, _, val_ids = corpus
    with pytest.raises(TypeError, match="get_batch"):
        train(tiny_model(tokenizer.vocab_size), [1, 2, 3], val_ids, tiny_config(), progress=False)


# ---------------------------------------------------------------------- tracked metrics
def test_tracked_metrics_follow_the_evaluations_without_disturbing_training(
    corpus, tmp_path, monkeypatch
) -> None:
    calls = []

    def noisy_probe(model) -> dict[str, float]:
        calls.append(model.training)
        torch.rand(1000)  # a tracker that draws random numbers must not change the run
        return {"score": float(len(calls)), "norm": float(model.lm_head.weight.norm())}

    monkeypatch.setitem(train_module.TRACKERS, "probe", noisy_probe)
    tokenizer, train_ids, val_ids = corpus
    settings = dict(max_steps=4, warmup_steps=0, eval_interval=2, checkpoint_interval=2)
    plain = train(tiny_model(tokenizer.vocab_size, dropout=0.2), train_ids, val_ids,
                  tiny_config(**settings), progress=False)  # fmt: skip
    tracked_config = tiny_config(**settings, track=("probe",))
    tracked = train(tiny_model(tokenizer.vocab_size, dropout=0.2), train_ids, val_ids,
                    tracked_config, progress=False)  # fmt: skip
    assert tracked.train_loss == plain.train_loss
    assert tracked.tracked["probe/score"] == [1.0, 2.0] and len(tracked.eval_steps) == 2
    assert calls == [False, False]  # measured in eval mode
    # and a resumed run records the same metrics at the same steps
    _interrupt_at_step(monkeypatch, 3)
    train(tiny_model(tokenizer.vocab_size, dropout=0.2), train_ids, val_ids, tracked_config,
          tmp_path / "run", progress=False)  # fmt: skip
    monkeypatch.setattr(train_module, "lr_at", lr_at)
    resumed = train(tiny_model(tokenizer.vocab_size, dropout=0.2), train_ids, val_ids,
                    tracked_config, tmp_path / "run", resume=True, progress=False)  # fmt: skip
    assert resumed.train_loss == plain.train_loss
    assert resumed.tracked["probe/norm"] == pytest.approx(tracked.tracked["probe/norm"])


def test_induction_is_a_registered_tracker() -> None:
    assert "induction" in train_module.TRACKERS
    assert TrainConfig(track=["induction", "induction"]).track == ("induction",)


# ---------------------------------------------------------------------- faults
def test_sigterm_is_handled_like_ctrl_c(corpus, tmp_path, monkeypatch) -> None:
    tokenizer, train_ids, val_ids = corpus
    config = tiny_config(max_steps=4, warmup_steps=0, eval_interval=2, checkpoint_interval=2)
    straight = tiny_model(tokenizer.vocab_size)
    train(straight, train_ids, val_ids, config, progress=False)
    _interrupt_at_step(monkeypatch, 3, signal.SIGTERM)  # what a scheduler or docker stop sends
    stopped = train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, config, tmp_path / "r",
                    progress=False)  # fmt: skip
    monkeypatch.undo()
    assert stopped.steps[-1] == 3
    assert json.loads((tmp_path / "r" / "checkpoint.json").read_text())["step"] == 3
    resumed = tiny_model(tokenizer.vocab_size)
    train(resumed, train_ids, val_ids, config, tmp_path / "r", resume=True, progress=False)
    for name, value in weights(straight).items():
        assert torch.equal(resumed.state_dict()[name], value)


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    config = tiny_config(max_steps=30, lr=1e6, warmup_steps=0, grad_clip=None, eval_interval=1,
                         checkpoint_interval=1)  # fmt: skip
    with pytest.raises(train_module.DivergedError, match="stopped being finite") as info:
        train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, config, tmp_path / "run",
              progress=False)  # fmt: skip
    last = info.value.history.steps[-1] if info.value.history.steps else 0
    saved = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"]
    assert saved == last < 30
    assert f"the checkpoint of step {saved}" in str(info.value)
    model, _, _ = load_checkpoint(tmp_path / "run")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_a_second_run_on_the_same_folder_stops_at_once(corpus, tmp_path) -> None:
    from gptlib.checkpoint import FolderLock

    tokenizer, train_ids, val_ids = corpus
    with FolderLock(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="in use by another training run"):
            train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(),
                  tmp_path / "run", progress=False)  # fmt: skip
    assert not (tmp_path / "run" / "checkpoint.json").exists()
    train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(max_steps=2, warmup_steps=0),
          tmp_path / "run", progress=False)  # fmt: skip
    assert {p.name for p in (tmp_path / "run").iterdir()} == CHECKPOINT_FILES - {"tokenizer.json"}


def test_an_unwritable_output_folder_fails_before_the_first_step(corpus, tmp_path, monkeypatch):
    tokenizer, train_ids, val_ids = corpus
    monkeypatch.setattr(train_module, "lr_at", lambda *a: pytest.fail("a step was taken"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to the output folder"):
        train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(),
              tmp_path / "file" / "run", progress=False)  # fmt: skip
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(PermissionError, match="cannot write to the output folder"):
            train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(),
                  tmp_path / "ro", progress=False)  # fmt: skip


def test_resuming_under_other_conditions_warns(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    threads = torch.get_num_threads()
    train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(max_steps=10),
          tmp_path / "run", progress=False)  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert manifest["environment"]["threads"] == threads
    assert manifest["environment"]["torch"] == torch.__version__
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(
            RuntimeWarning, match=f"threads: checkpoint {threads}, now {threads + 1}"
        ):
            train(tiny_model(tokenizer.vocab_size), train_ids, val_ids,
                  tiny_config(max_steps=12), tmp_path / "run", resume=True, progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_load_checkpoint_refuses_a_tokenizer_that_is_not_the_models(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(max_steps=2, warmup_steps=0),
          tmp_path / "run", progress=False, tokenizer=tokenizer)  # fmt: skip
    other = CharTokenizer.from_text("abc")
    other.save(tmp_path / "run" / "tokenizer.json")
    with pytest.raises(ValueError, match="tokenizer.json is not the file this checkpoint was"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "run" / "checkpoint.json").unlink()  # a checkpoint older than manifests
    with pytest.raises(ValueError, match="has 3 ids but the model's vocab_size is 46"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="the tokenizer has 47 ids but the model's vocab_size"):
        train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, tiny_config(max_steps=2, warmup_steps=0),
              progress=False, tokenizer=CharTokenizer.from_text("".join(tokenizer.chars) + "é"))  # fmt: skip


def test_what_would_fail_later_is_refused_before_the_first_step(corpus, tmp_path, monkeypatch):
    tokenizer, train_ids, val_ids = corpus
    monkeypatch.setattr(train_module, "lr_at", lambda *a: pytest.fail("a step was taken"))
    data = (train_ids, val_ids)
    with pytest.raises(TypeError, match="train takes a gptlib GPT model, got Linear"):
        train(torch.nn.Linear(2, 2), *data, tiny_config(), progress=False)
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        train(tiny_model(tokenizer.vocab_size), *data, {"max_steps": 2}, progress=False)
    frozen = tiny_model(tokenizer.vocab_size).requires_grad_(False)
    with pytest.raises(ValueError, match="no weight of the model requires a gradient"):
        train(frozen, *data, tiny_config(), progress=False)
    # 16-bit weights lose AdamW's updates (float16 diverged at step 2 with "lower the lr")
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=f"weights are {dtype}.*model.float"):
            train(tiny_model(tokenizer.vocab_size).to(dtype), *data, tiny_config(), progress=False)
    # a head untied by hand was refused only by the first save, after a whole interval
    untied = tiny_model(tokenizer.vocab_size)
    untied.lm_head.weight = torch.nn.Parameter(untied.tok_emb.weight.detach() + 1)
    with pytest.raises(ValueError, match="tie_embeddings is True, but lm_head.weight"):
        train(untied, *data, tiny_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_batch_source_that_returns_the_wrong_thing_is_named(corpus) -> None:
    tokenizer, train_ids, val_ids = corpus

    class FewRows:  # one window when asked for 8: trained silently on a smaller batch
        def get_batch(self, batch_size, block_size, generator, device="cpu"):
            return train_ids[None, :block_size], train_ids[None, 1 : block_size + 1]

    with pytest.raises(ValueError, match=r"FewRows.get_batch returned x of shape \(1, 16\)"):
        train(tiny_model(tokenizer.vocab_size), FewRows(), val_ids, tiny_config(), progress=False)


def test_resuming_on_other_data_is_refused(corpus, tmp_path) -> None:
    tokenizer, train_ids, val_ids = corpus
    config = tiny_config(max_steps=2, warmup_steps=0, eval_interval=2)
    train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, config, tmp_path / "run",
          progress=False)  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert manifest["data"]["train"]["tokens"] == len(train_ids)
    longer = tiny_config(max_steps=4, warmup_steps=0, eval_interval=2)
    with pytest.raises(ValueError, match=r"trained on other data \(train: checkpoint 18,000 tok"):
        train(tiny_model(tokenizer.vocab_size), train_ids[:9000], val_ids, longer,
              tmp_path / "run", resume=True, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"val: checkpoint 2,000 tokens, now 2,000 \(other ids\)"):
        train(tiny_model(tokenizer.vocab_size), train_ids, val_ids.flip(0), longer,
              tmp_path / "run", resume=True, progress=False)  # fmt: skip
    resumed = train(tiny_model(tokenizer.vocab_size), train_ids, val_ids, longer,
                    tmp_path / "run", resume=True, progress=False)  # fmt: skip
    assert resumed.steps == [1, 2, 3, 4]
