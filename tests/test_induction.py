"""gptlib.interpret: head scores on hand-made attention, losses on repeated sequences, head
ablation, and the claim of chapter 15 that the shipped checkpoint has an induction head."""

from pathlib import Path

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.interpret import (
    ablated_heads,
    copy_losses,
    diagonal_scores,
    induction_scores,
    per_token_loss,
    previous_token_scores,
    repeated_random_tokens,
)
from gptlib.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "data" / "checkpoints" / "char_python_docs"
# The settings notebooks/15_attention_maps.ipynb measures with.
SEQ_LEN, BATCH, SEED = 48, 16, 0


def _tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=40
    )
    return GPT(config).eval()


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
    with pytest.raises(ValueError, match="one per layer"):
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


def test_ablated_heads_silence_a_head_and_restore_it() -> None:
    model = _tiny_model()
    tokens = torch.randint(0, 40, (1, 16))
    before = model(tokens).logits
    weight = model.blocks[1].attn.out_proj.weight
    original = weight.detach().clone()
    with ablated_heads(model, [(1, 2)]):
        assert torch.all(weight[:, 16:24] == 0) and torch.equal(weight[:, :16], original[:, :16])
        assert not torch.allclose(model(tokens).logits, before)
    assert torch.equal(weight, original)
    assert torch.allclose(model(tokens).logits, before)
    with pytest.raises(ValueError, match=r"no head \(2, 0\)"):
        with ablated_heads(model, [(2, 0)]):
            pass
    assert torch.equal(weight, original)


def test_the_shipped_checkpoint_has_an_induction_head() -> None:
    model, _, _ = load_checkpoint(CHECKPOINT)
    generator = torch.Generator().manual_seed(SEED)
    scores = induction_scores(model, SEQ_LEN, batch=BATCH, generator=generator)
    assert scores.shape == (model.config.n_layer, model.config.n_head)
    assert scores.max() >= 0.3, f"best induction score {scores.max():.3f}; scores:\n{scores}"
    # and a model that attends by induction predicts the second copy much better than the first
    # (random characters are far from its training text, so even the second copy stays costly)
    tokens = repeated_random_tokens(model.config.vocab_size, SEQ_LEN, BATCH, 2, generator)
    first, second = copy_losses(model, tokens, SEQ_LEN)
    assert second < first - 2.0, f"loss on the first copy {first:.2f}, second {second:.2f}"
