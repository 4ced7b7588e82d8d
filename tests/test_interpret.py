"""gptlib.interpret: head scores on hand-made attention, losses and accuracy on repeated
sequences, the OV circuit and copying score against a hand computation, the induction probe,
and the claim of chapter 15 that the shipped checkpoint has an induction head."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.interpret import (
    copy_accuracy,
    copy_losses,
    copying_score,
    diagonal_scores,
    induction_probe,
    induction_scores,
    ov_circuit,
    per_token_loss,
    previous_token_scores,
    repeated_random_tokens,
    stack_attentions,
)
from gptlib.interventions import residual_stream
from gptlib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "data" / "checkpoints" / "char_python_docs"
# The settings notebooks/15_attention_maps.ipynb measures with.
SEQ_LEN, BATCH, SEED = 48, 16, 0


def _tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=40) | overrides
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


def _one_hot_attention(T: int, key_of_query) -> torch.Tensor:
    """A (1, 1, T, T) map in which query q puts all its weight on key key_of_query(q)."""
    weights = torch.zeros(1, 1, T, T)
    for q in range(T):
        weights[0, 0, q, key_of_query(q)] = 1.0
    return weights


def test_previous_token_score_is_one_for_a_previous_token_head_and_small_for_uniform() -> None:
    T = 10
    previous = _one_hot_attention(T, lambda q: max(q - 1, 0))
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None, None]
    scores = previous_token_scores([torch.cat([previous, uniform], dim=1)])
    assert scores.shape == (1, 2)
    assert scores[0, 0] == 1.0
    expected_uniform = sum(1 / (q + 1) for q in range(1, T)) / (T - 1)
    assert scores[0, 1].item() == pytest.approx(expected_uniform)


def test_diagonal_scores_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="first_query"):
        diagonal_scores([torch.ones(1, 1, 4, 4)], offset=2, first_query=1)
    with pytest.raises(ValueError, match="tensor per layer"):
        diagonal_scores([torch.ones(4, 4)], offset=1)


def test_repeated_random_tokens_repeat_and_are_seeded() -> None:
    tokens = repeated_random_tokens(50, 7, batch=3, n_repeats=3, generator=torch.Generator())
    assert tokens.shape == (3, 21)
    assert torch.equal(tokens[:, :7], tokens[:, 7:14]) and torch.equal(
        tokens[:, :7], tokens[:, 14:]
    )
    again = repeated_random_tokens(50, 7, 3, 3, torch.Generator().manual_seed(5))
    assert torch.equal(again, repeated_random_tokens(50, 7, 3, 3, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="n_repeats >= 2"):
        repeated_random_tokens(50, 7, n_repeats=1)


def test_repeated_random_tokens_can_draw_from_a_few_ids() -> None:
    tokens = repeated_random_tokens(50, 30, batch=4, candidates=[3, 7, 11])
    assert set(tokens.unique().tolist()) == {3, 7, 11}
    with pytest.raises(ValueError, match="candidates"):
        repeated_random_tokens(50, 30, candidates=[3, 50])


def test_induction_score_reads_the_stripe_one_after_the_earlier_copy() -> None:
    seq_len, T = 5, 10
    # A perfect induction head: from q in the second copy to q - seq_len + 1.
    perfect = _one_hot_attention(T, lambda q: q - seq_len + 1 if q >= seq_len else q)
    scores = diagonal_scores([perfect], offset=seq_len - 1, first_query=seq_len)
    assert scores.item() == 1.0


def test_an_untrained_model_has_no_induction_head() -> None:
    model = _tiny_model()
    scores = induction_scores(model, seq_len=20, batch=4, generator=torch.Generator())
    assert scores.shape == (2, 4)
    assert scores.max() < 0.15  # near uniform attention over about 30 keys


def test_induction_scores_refuse_sequences_longer_than_the_block() -> None:
    with pytest.raises(ValueError, match="block_size 64"):
        induction_scores(_tiny_model(), seq_len=40)


def test_per_token_loss_averages_to_the_models_loss() -> None:
    model = _tiny_model()
    tokens = torch.randint(0, 40, (2, 12))
    expected = model(tokens[:, :-1], targets=tokens[:, 1:]).loss
    assert per_token_loss(model, tokens).shape == (2, 11)
    assert per_token_loss(model, tokens).mean().item() == pytest.approx(expected.item(), rel=1e-5)


def test_copy_losses_leave_out_the_first_token_of_each_copy() -> None:
    model = _tiny_model()
    tokens = repeated_random_tokens(40, 6, batch=2, n_repeats=3)
    losses = per_token_loss(model, tokens)
    expected = [losses[:, 0:5].mean(), losses[:, 6:11].mean(), losses[:, 12:17].mean()]
    assert torch.allclose(copy_losses(model, tokens, 6), torch.stack(expected))
    with pytest.raises(ValueError, match="whole copies"):
        copy_losses(model, tokens, 5)


def test_the_shipped_checkpoint_has_an_induction_head(checkpoint) -> None:
    model = checkpoint
    generator = torch.Generator().manual_seed(SEED)
    scores = induction_scores(model, SEQ_LEN, batch=BATCH, generator=generator)
    assert scores.shape == (model.config.n_layer, model.config.n_head)
    assert scores.max() >= 0.3, f"best induction score {scores.max():.3f}; scores:\n{scores}"
    # and a model that attends by induction predicts the second copy much better than the first
    # (random characters are far from its training text, so even the second copy stays costly)
    tokens = repeated_random_tokens(model.config.vocab_size, SEQ_LEN, BATCH, 2, generator)
    first, second = copy_losses(model, tokens, SEQ_LEN)
    assert second < first - 2.0, f"loss on the first copy {first:.2f}, second {second:.2f}"


@pytest.fixture(scope="module")
def checkpoint() -> GPT:
    return load_checkpoint(CHECKPOINT)[0]


def test_stack_attentions_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="without return_attention=True"):
        stack_attentions(None)
    with pytest.raises(ValueError, match="without return_attention=True"):
        stack_attentions((None, None))
    with pytest.raises(ValueError, match="empty"):
        stack_attentions([])
    with pytest.raises(ValueError, match="one shape"):
        stack_attentions([torch.ones(1, 2, 3, 3), torch.ones(1, 2, 4, 4)])
    assert stack_attentions([torch.ones(2, 3, 3)]).shape == (1, 1, 2, 3, 3)


def test_copy_accuracy_counts_right_top_guesses_per_copy() -> None:
    model = _tiny_model()
    tokens = repeated_random_tokens(40, 6, batch=3, n_repeats=2)
    with torch.no_grad():
        guesses = model(tokens[:, :-1]).logits.argmax(-1)
    hits = (guesses == tokens[:, 1:]).float()
    expected = torch.stack([hits[:, 0:5].mean(), hits[:, 6:11].mean()])
    assert torch.equal(copy_accuracy(model, tokens, 6), expected)
    with pytest.raises(ValueError, match="whole copies"):
        copy_accuracy(model, tokens, 5)


def _ov_by_hand(model: GPT, layer: int, head: int, ids: list[int], inputs=None) -> torch.Tensor:
    """W_U · LNf-linear · W_O^h · W_V^h · LN1(x_s), written out with explicit slices."""
    c, hd = model.config, model.config.head_dim
    attn = model.blocks[layer].attn
    with torch.no_grad():
        x = model.tok_emb.weight[ids] if inputs is None else inputs
        x = model.blocks[layer].ln_1(x)
        v_rows = attn.qkv.weight[(c.n_head + c.n_kv_head) * hd :]  # the value heads
        kv = head // (c.n_head // c.n_kv_head)
        v = x @ v_rows[kv * hd : (kv + 1) * hd].T  # (n, hd)
        written = v @ attn.out_proj.weight[:, head * hd : (head + 1) * hd].T  # (n, n_embd)
        centred = (written - written.mean(-1, keepdim=True)) * model.ln_f.weight
        return centred @ model.lm_head.weight[ids].T  # [s, t]


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_ov_circuit_is_the_product_of_the_heads_matrices(n_kv_head: int) -> None:
    model = _tiny_model(n_kv_head=n_kv_head)
    ids = [3, 5, 7, 11, 13]
    for layer, head in [(0, 0), (1, 3)]:
        expected = _ov_by_hand(model, layer, head, ids)
        assert torch.allclose(ov_circuit(model, layer, head, ids), expected, atol=1e-5)
    assert ov_circuit(model, 0, 1).shape == (40, 40)
    with pytest.raises(ValueError, match=r"no head \(2, 0\)"):
        ov_circuit(model, 2, 0)
    with pytest.raises(ValueError, match="token_ids"):
        ov_circuit(model, 0, 0, [40])


def test_ov_circuit_on_a_reference_uses_each_tokens_mean_residual() -> None:
    model = _tiny_model()
    reference = repeated_random_tokens(40, 10, batch=4, candidates=[1, 2, 3])
    stream = residual_stream(model, reference)[1]  # what enters layer 1
    means = torch.stack([stream[reference == i].mean(0) for i in (1, 2, 3)])
    expected = _ov_by_hand(model, 1, 2, [1, 2, 3], inputs=means)
    got = ov_circuit(model, 1, 2, [1, 2, 3], reference=reference)
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"never occur in the reference"):
        ov_circuit(model, 1, 2, [1, 4], reference=reference)


def test_copying_score_is_the_eigenvalue_ratio_of_the_full_matrix() -> None:
    model = _tiny_model()
    ids = list(range(0, 40, 2))
    for layer, head in [(0, 0), (0, 2), (1, 1)]:
        eigenvalues = torch.linalg.eigvals(_ov_by_hand(model, layer, head, ids).double())
        expected = (eigenvalues.sum().real / eigenvalues.abs().sum()).item()
        assert copying_score(model, layer, head, ids) == pytest.approx(expected, abs=1e-6)
    score = copying_score(model, 0, 0, ids)
    with torch.no_grad():  # a head that writes the opposite copies the opposite
        model.blocks[0].attn.out_proj.weight[:, :8] *= -1
    assert copying_score(model, 0, 0, ids) == pytest.approx(-score, abs=1e-6)


def test_induction_probe_is_deterministic_and_leaves_no_trace() -> None:
    model = _tiny_model(block_size=16).train()  # learned positions: shorter sequences
    state = torch.random.get_rng_state()
    first = induction_probe(model)
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state moved"
    assert model.training, "the probe must give the model back in training mode"
    assert first == induction_probe(model)
    assert set(first) == {
        "induction_score", "previous_token_score", "first_copy_loss", "second_copy_loss",
        "first_copy_accuracy", "second_copy_accuracy",
    }  # fmt: skip
    assert all(isinstance(value, float) for value in first.values())
    assert 0 <= first["second_copy_accuracy"] <= 1 and first["first_copy_loss"] > 0
    with pytest.raises(ValueError, match="n_candidates"):
        induction_probe(model, n_candidates=0)


def test_induction_probe_measures_the_shipped_checkpoint_quickly(checkpoint) -> None:
    induction_probe(checkpoint)  # warm up
    started = time.perf_counter()
    probe = induction_probe(checkpoint)
    seconds = time.perf_counter() - started
    # well under a second on a quiet 2-core CPU; the margin absorbs a busy machine
    assert seconds < 5.0, f"induction_probe took {seconds:.2f} s"
    assert probe["induction_score"] > 0.3
    assert probe["second_copy_accuracy"] > probe["first_copy_accuracy"] + 0.15
    assert probe["second_copy_loss"] < probe["first_copy_loss"] - 1.5
    untrained = induction_probe(GPT(checkpoint.config))
    assert untrained["induction_score"] < 0.1
    assert untrained["second_copy_accuracy"] < 0.15


_X = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(0))
# (call on a tiny model, error type, what the message must say): each was a torch traceback,
# an AttributeError, or a silently truncated value (head 0.7 read as 0, token 1.5 as 1).
BAD_INTERPRET_CALLS = {
    "float offset": (lambda m, a: diagonal_scores(a, offset=1.5), TypeError, "offset"),
    "negative offset": (lambda m, a: diagonal_scores(a, offset=-1), ValueError, "offset"),
    "first_query past the end": (
        lambda m, a: diagonal_scores(a, offset=0, first_query=99), ValueError, "first_query",
    ),
    "vocab_size 0": (lambda m, a: repeated_random_tokens(0, 4), ValueError, "vocab_size"),
    "float seq_len": (lambda m, a: repeated_random_tokens(40, 4.5), TypeError, "seq_len"),
    "tokens as a list": (
        lambda m, a: induction_scores(m, 4, tokens=[[1, 2, 3, 4] * 2]), ValueError, "tensor",
    ),
    "1-D tokens": (lambda m, a: induction_scores(m, 4, tokens=torch.arange(8)), ValueError, "batch"),
    "float seq_len to score": (lambda m, a: induction_scores(m, 4.0, tokens=_X), TypeError, "seq_len"),
    "T = 1": (lambda m, a: per_token_loss(m, _X[:, :1]), ValueError, "T >= 2"),
    "empty batch": (lambda m, a: per_token_loss(m, _X[:0]), ValueError, "no tokens"),
    "not whole copies": (lambda m, a: copy_losses(m, _X, 3), ValueError, "whole copies"),
    "float seq_len for copies": (lambda m, a: copy_accuracy(m, _X, 4.0), TypeError, "seq_len"),
    "copies of a list": (lambda m, a: copy_losses(m, [[1, 2]], 2), ValueError, "tensor"),
    "float head": (lambda m, a: ov_circuit(m, 0, 0.7), TypeError, "head"),
    "layer out of range": (lambda m, a: copying_score(m, 9, 0), ValueError, "no head"),
    "negative layer": (lambda m, a: ov_circuit(m, -1, 0), ValueError, "no head"),
    "float token ids": (lambda m, a: ov_circuit(m, 0, 0, [1.5, 2.5]), TypeError, "token_ids"),
    "no token ids": (lambda m, a: ov_circuit(m, 0, 0, []), ValueError, "token_ids"),
    "probe float seq_len": (lambda m, a: induction_probe(m, seq_len=3.5), TypeError, "seq_len"),
    "probe float n_candidates": (
        lambda m, a: induction_probe(m, n_candidates=2.0), TypeError, "n_candidates",
    ),
    "probe negative seed": (lambda m, a: induction_probe(m, seed=-1), ValueError, "seed"),
    "probe batch 0": (lambda m, a: induction_probe(m, batch=0), ValueError, "batch"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INTERPRET_CALLS, ids=str)
def test_every_bad_interpretability_argument_is_named(case: str) -> None:
    call, error, message = BAD_INTERPRET_CALLS[case]
    model = _tiny_model()
    with torch.no_grad():
        attentions = model(_X, return_attention=True).attentions
    with pytest.raises(error, match=message):
        call(model, attentions)


def test_numpy_integers_name_a_head() -> None:
    model = _tiny_model()
    assert copying_score(model, np.int64(1), np.int64(1)) == copying_score(model, 1, 1)
