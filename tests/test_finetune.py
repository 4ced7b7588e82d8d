"""GPT-1 fine-tuning pieces: task inputs, padded batches, the classifier head and its loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlib import GPT, GPTConfig
from gptlib.finetune import ClassifierBatch, SequenceClassifier, add_tokens, collate, gpt1_input

START, DELIM, EXTRACT = 20, 21, 22


def tiny_gpt(preset: str = "gpt1") -> GPT:
    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        preset, n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=23
    )
    return GPT(config)


def test_gpt1_input_layouts() -> None:
    assert gpt1_input([1, 2], start_id=START, extract_id=EXTRACT) == [START, 1, 2, EXTRACT]
    assert gpt1_input([1], [2, 3], start_id=START, delim_id=DELIM, extract_id=EXTRACT) == [
        START, 1, DELIM, 2, 3, EXTRACT,
    ]  # fmt: skip


def test_gpt1_input_errors() -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        gpt1_input(start_id=START, extract_id=EXTRACT)
    with pytest.raises(ValueError, match="delim_id"):
        gpt1_input([1], [2], start_id=START, extract_id=EXTRACT)


def test_collate_pads_and_marks_targets() -> None:
    short = gpt1_input([1, 2], start_id=START, extract_id=EXTRACT)
    long = gpt1_input([3], [4, 5], start_id=START, delim_id=DELIM, extract_id=EXTRACT)
    batch = collate([short, long], [0, 1], pad_id=0, special_ids=(START, DELIM, EXTRACT))
    assert batch.idx.tolist() == [[START, 1, 2, EXTRACT, 0, 0], long]
    assert batch.extract_positions.tolist() == [3, 5]
    assert batch.labels.tolist() == [0, 1]
    # next token inside the text only: never a special token, never padding
    assert batch.lm_targets.tolist() == [[1, 2, -1, -1, -1, -1], [3, -1, 4, 5, -1, -1]]


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        collate([])
    with pytest.raises(ValueError, match="one each"):
        collate([[1, 2], [3, 4]], labels=[0])


def test_classifier_shapes_and_loss_is_task_plus_lambda_lm() -> None:
    batch = collate([[START, 1, 2, 3, EXTRACT], [START, 4, EXTRACT]], [2, 0],
                    special_ids=(START, EXTRACT))  # fmt: skip
    model = SequenceClassifier(tiny_gpt(), n_classes=3, lm_weight=0.5).eval()
    out = model(batch)
    assert out.logits.shape == (2, 3)
    assert torch.allclose(out.task_loss, F.cross_entropy(out.logits, batch.labels))
    assert torch.allclose(out.loss, out.task_loss + 0.5 * out.lm_loss)
    lm_logits = model.gpt(batch.idx).logits
    expected_lm = F.cross_entropy(lm_logits.reshape(-1, 23), batch.lm_targets.reshape(-1),
                                  ignore_index=-1)  # fmt: skip
    assert torch.allclose(out.lm_loss, expected_lm)
    model.lm_weight = 0.0
    assert torch.allclose(model(batch).loss, out.task_loss)


def test_no_labels_gives_logits_only() -> None:
    batch = collate([[START, 1, EXTRACT]])
    out = SequenceClassifier(tiny_gpt(), n_classes=2)(batch)
    assert out.logits.shape == (1, 2) and out.loss is None


@pytest.mark.parametrize("preset", ["gpt1", "gpt2"])
def test_head_reads_the_final_hidden_state_of_the_extract_token(preset: str) -> None:
    gpt = tiny_gpt(preset)
    model = SequenceClassifier(gpt, n_classes=2).eval()
    ids = [START, 1, 2, 3, EXTRACT]
    out = model(collate([ids]))
    hidden = {}
    gpt.ln_f.register_forward_hook(lambda m, a, o: hidden.setdefault("h", o))
    gpt(torch.tensor([ids]))
    expected = model.head(hidden["h"][0, -1])
    assert torch.allclose(out.logits[0], expected, atol=1e-6)


def test_padding_after_the_extract_token_changes_nothing() -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=2).eval()
    short = [START, 1, EXTRACT]
    alone = model(collate([short])).logits
    padded = model(collate([short, [START, 1, 2, 3, 4, 5, EXTRACT]])).logits[:1]
    assert torch.allclose(alone, padded, atol=1e-6)


def test_gradients_reach_the_gpt_and_the_head() -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=2)
    model(collate([[START, 1, 2, EXTRACT]], [1], special_ids=(START, EXTRACT))).loss.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert model.gpt.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_predict_keeps_the_training_mode_and_learns_a_separable_task() -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=2, dropout=0.0)
    batch = collate([[START, 1, 1, EXTRACT], [START, 2, 2, EXTRACT]] * 2, [0, 1, 0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.train()
    assert model.predict(batch).tolist() == [0, 1, 0, 1]
    assert model.training


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        SequenceClassifier(tiny_gpt(), n_classes=0)
    with pytest.raises(ValueError, match="lm_weight"):
        SequenceClassifier(tiny_gpt(), n_classes=2, lm_weight=-1.0)


def test_an_input_of_only_special_tokens_gives_a_zero_lm_loss_that_trains() -> None:
    """No LM target is left (all ignored): the LM term is zero, not NaN, and a step is safe."""
    gpt = tiny_gpt()
    batch = collate([gpt1_input([], start_id=START, extract_id=EXTRACT)], labels=[1],
                    special_ids=(START, DELIM, EXTRACT))  # fmt: skip
    assert (batch.lm_targets == -1).all()
    model = SequenceClassifier(gpt, n_classes=2)
    out = model(batch)
    assert out.lm_loss.item() == 0.0 and out.lm_loss.requires_grad
    torch.testing.assert_close(out.loss, out.task_loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out.loss.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model(batch).logits).all()


def test_labels_use_the_same_ignore_values_and_range_check() -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=2).eval()
    batch = collate([[START, 1, EXTRACT], [START, 2, EXTRACT]], labels=[1, -100])
    out = model(batch)
    torch.testing.assert_close(out.task_loss, F.cross_entropy(out.logits[:1], batch.labels[:1]))
    with pytest.raises(ValueError, match=r"target 2 at position \(1,\) is outside \[0, 2\)"):
        model(collate([[START, 1, EXTRACT], [START, 2, EXTRACT]], labels=[0, 2]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_classes=2.0), TypeError, "n_classes"),
        (dict(n_classes=2, lm_weight="0.5"), TypeError, "lm_weight"),
        (dict(n_classes=2, lm_weight=float("inf")), ValueError, "lm_weight"),
        (dict(n_classes=2, dropout=1.0), ValueError, "dropout"),
    ],
)
def test_bad_classifier_settings_are_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        SequenceClassifier(tiny_gpt(), **kwargs)
    with pytest.raises(TypeError, match="gptlib GPT"):
        SequenceClassifier(torch.nn.Linear(2, 2), n_classes=2)


def test_scalar_head_scores_each_row_and_refuses_labels() -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=1, lm_weight=0.0, dropout=0.0).eval()
    batch = collate([[START, 1, 2, EXTRACT], [START, 3, EXTRACT]])
    scores = model(batch).logits
    assert scores.shape == (2, 1)
    alone = model(collate([[START, 3, EXTRACT]])).logits
    torch.testing.assert_close(scores[1], alone[0])  # padding after the last token changes nothing
    batch.labels = torch.tensor([0, 0])
    with pytest.raises(ValueError, match="scalar head"):
        model(batch)


def test_save_and_load_keep_the_head(tmp_path) -> None:
    model = SequenceClassifier(tiny_gpt(), n_classes=1, lm_weight=0.0, dropout=0.0).eval()
    torch.nn.init.normal_(model.head.weight)
    batch = collate([[START, 1, 2, EXTRACT]])
    model.save(tmp_path / "rm")
    loaded = SequenceClassifier.load(tmp_path / "rm")
    assert loaded.head.out_features == 1 and loaded.lm_weight == 0.0 and not loaded.training
    torch.testing.assert_close(loaded(batch).logits, model(batch).logits)
    tiny_gpt().save(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="SequenceClassifier.save"):
        SequenceClassifier.load(tmp_path / "plain")


@pytest.mark.parametrize("tie_embeddings", [True, False], ids=["tied", "untied"])
def test_add_tokens_appends_new_ids_and_keeps_what_the_old_ones_give(tie_embeddings) -> None:
    torch.manual_seed(0)
    config = GPTConfig.from_preset("gpt1", n_layer=2, n_head=2, n_embd=16, block_size=32,
                                   vocab_size=20, tie_embeddings=tie_embeddings,
                                   lm_head_bias=not tie_embeddings)  # fmt: skip
    model = GPT(config).eval()
    bigger = add_tokens(model, 3).eval()
    assert bigger.config.vocab_size == 23 and model.config.vocab_size == 20
    assert bigger.config.diff(model.config) == [("vocab_size", 23, 20)]
    idx = torch.randint(20, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(bigger(idx).logits[..., :20], model(idx).logits, atol=1e-6)
        new_rows = bigger.tok_emb.weight[20:]
    assert new_rows.abs().sum() > 0 and new_rows.std() < 0.1  # drawn like the init, not zeros
    assert (bigger.lm_head.weight is bigger.tok_emb.weight) == tie_embeddings
    # The new ids can be read, and the model trains through them.
    loss = bigger(torch.tensor([[20, 3, 21, 5, 22]]), targets=torch.tensor([[3, 4, 5, 6, 7]])).loss
    loss.backward()
    assert bigger.tok_emb.weight.grad[20:].abs().sum() > 0
    with pytest.raises(ValueError, match="n_new"):
        add_tokens(model, 0)


# (call, error, what the message names): before, float ids and labels were truncated, negative
# ids and pad_id accepted, text split into characters or failed in torch, a tensor batch gave
# an AttributeError and an extract position outside the input an IndexError.
BAD_FINETUNE_CALLS = {
    "float id": (lambda g: gpt1_input([1.5, 2], start_id=START, extract_id=EXTRACT), TypeError, "segment 0"),
    "text segment": (lambda g: gpt1_input("abc", start_id=START, extract_id=EXTRACT), TypeError, "encode text"),
    "float start_id": (lambda g: gpt1_input([1], start_id=17.0, extract_id=EXTRACT), TypeError, "start_id"),
    "no start_id": (lambda g: gpt1_input([1], start_id=None, extract_id=EXTRACT), TypeError, "start_id"),
    "negative id": (lambda g: gpt1_input([-1, 2], start_id=START, extract_id=EXTRACT), ValueError, "segment 0"),
    "float delim_id": (
        lambda g: gpt1_input([1], [2], start_id=START, extract_id=EXTRACT, delim_id=18.5), TypeError, "delim_id",
    ),
    "float ids in collate": (lambda g: collate([[1.5, 2.7]]), TypeError, r"sequences\[0\]"),
    "negative ids in collate": (lambda g: collate([[1, 2], [-3, 2]]), ValueError, r"sequences\[1\]"),
    "text inputs": (lambda g: collate(["ab", "cd"]), TypeError, "encode text"),
    "one flat input": (lambda g: collate([1, 2, 3]), TypeError, r"wrap a single input as \[ids\]"),
    "float label": (lambda g: collate([[1, 2]], labels=[0.7]), TypeError, "label"),
    "label -2": (lambda g: collate([[1, 2]], labels=[-2]), ValueError, "-1 / -100"),
    "text labels": (lambda g: collate([[1, 2], [3, 4]], labels="01"), TypeError, "labels"),
    "negative pad_id": (lambda g: collate([[1, 2]], pad_id=-1), ValueError, "pad_id"),
    "float pad_id": (lambda g: collate([[1, 2]], pad_id=1.5), TypeError, "pad_id"),
    "one special id": (lambda g: collate([[1, 2]], special_ids=17), TypeError, r"wrap one as \[id\]"),
    "a tensor, not a batch": (
        lambda g: SequenceClassifier(g, 2)(torch.tensor([[1, 2]])), TypeError, "collate",
    ),
    "extract outside the input": (
        lambda g: SequenceClassifier(g, 2)(
            ClassifierBatch(torch.tensor([[1, 2]]), torch.tensor([5]), torch.tensor([[2, -1]]))
        ), ValueError, "extract_positions",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FINETUNE_CALLS, ids=str)
def test_every_bad_finetuning_input_is_named(case: str) -> None:
    call, error, message = BAD_FINETUNE_CALLS[case]
    with pytest.raises(error, match=message):
        call(tiny_gpt())


def test_numpy_and_tensor_ids_and_labels_are_ids() -> None:
    ids = gpt1_input(np.array([1, 2]), torch.tensor([3]), start_id=np.int64(START),
                     delim_id=DELIM, extract_id=EXTRACT)  # fmt: skip
    assert ids == [START, 1, 2, DELIM, 3, EXTRACT] and all(type(i) is int for i in ids)
    batch = collate([torch.tensor(ids), ids], labels=np.array([1, -100]))
    assert batch.labels.tolist() == [1, -100] and batch.idx[0].tolist() == ids
