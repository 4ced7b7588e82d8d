"""DPO: the loss on hand-computed numbers, and training that moves the policy to the chosen."""

import math

import pytest
import torch
from test_alignment import _comparisons, tiny_gpt

from gptlib.alignment import sequence_logprobs
from gptlib.dpo import dpo_loss, train_dpo


def test_dpo_loss_on_hand_computed_numbers() -> None:
    loss, chosen, rejected = dpo_loss(
        torch.tensor([-1.0, -3.0]),
        torch.tensor([-2.0, -1.0]),
        torch.tensor([-1.5, -2.0]),
        torch.tensor([-1.5, -2.0]),
        beta=0.5,
    )
    # implicit rewards β (log π - log π_ref): chosen 0.25 and -0.5, rejected -0.25 and 0.5
    torch.testing.assert_close(chosen, torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(rejected, torch.tensor([-0.25, 0.5]))
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    by_hand = -(math.log(sigmoid(0.5)) + math.log(sigmoid(-1.0))) / 2
    assert loss.item() == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(chosen, rejected, chosen, rejected, beta=0.0)


def test_dpo_moves_probability_towards_the_chosen_responses() -> None:
    data = _comparisons()
    reference = tiny_gpt()
    policy = tiny_gpt()
    before = sequence_logprobs(policy, data.idx, data.response_mask)
    history = train_dpo(policy, reference, data, beta=0.5, steps=30, batch_size=8, lr=3e-3)
    after = sequence_logprobs(policy.eval(), data.idx, data.response_mask)
    margin = (after - before)[data.pairs[:, 0]] - (after - before)[data.pairs[:, 1]]
    assert (margin > 0).all()
    assert history["loss"][-1] < math.log(2) and history["accuracy"][-1] == 1.0
    ref_now = sequence_logprobs(reference, data.idx, data.response_mask)
    torch.testing.assert_close(ref_now, before)  # the reference is left alone
