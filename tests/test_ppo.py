"""PPO for RLHF: KL-penalised rewards, GAE, the clipped losses, the value head and the loop."""

import pytest
import torch
from test_alignment import EOS, tiny_gpt

from gptlib.alignment import Comparisons, generate_responses, reward_model, train_reward_model
from gptlib.ppo import (
    PPOConfig,
    gae_advantages,
    kl_penalised_rewards,
    ppo,
    ppo_policy_loss,
    ppo_value_loss,
    token_values,
    value_model,
)


def test_kl_penalised_rewards_add_the_score_at_the_last_token() -> None:
    logprobs = torch.tensor([[-1.0, -1.0, -2.0, -0.5], [-1.0, -3.0, -1.0, -1.0]])
    ref_logprobs = torch.tensor([[-1.0, -2.0, -1.0, -0.5], [-1.0, -1.0, -1.0, -9.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    rewards = kl_penalised_rewards(logprobs, ref_logprobs, torch.tensor([3.0, -1.0]), mask, 0.5)
    # row 0: -0.5·(-1 - -2) = -0.5 at t=1; -0.5·(-2 - -1) = 0.5, plus the score 3, at t=2
    # row 1: 1.0 at t=1, 0 at t=2, -0.5·(-1 - -9) = -4 plus the score -1 at t=3
    expected = torch.tensor([[0.0, -0.5, 3.5, 0.0], [0.0, 1.0, 0.0, -5.0]])
    torch.testing.assert_close(rewards, expected)
    summed = rewards.sum(dim=1)
    kl = ((logprobs - ref_logprobs) * mask).sum(dim=1)
    torch.testing.assert_close(summed, torch.tensor([3.0, -1.0]) - 0.5 * kl)
    with pytest.raises(ValueError, match="at least one response token"):
        kl_penalised_rewards(logprobs, ref_logprobs, torch.zeros(2), torch.zeros_like(mask), 0.5)


def test_gae_matches_the_definition() -> None:
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, -1.0, 2.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    # the episode is t = 1, 2, 3; V after the last action is 0
    v = [0.5, -1.0, 2.0, 0.0]
    r = [1.0, 2.0, 3.0]
    deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(3)]
    advantages = [sum((gamma * lam) ** k * deltas[t + k] for k in range(3 - t)) for t in range(3)]
    got, returns = gae_advantages(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(got, torch.tensor([[0.0, *advantages, 0.0]]))
    expected_returns = [a + b for a, b in zip(advantages, v[:3], strict=True)]
    torch.testing.assert_close(returns, torch.tensor([[0.0, *expected_returns, 0.0]]))
    # λ = 1, γ = 1: the advantage is the reward still to come minus the value
    got, _ = gae_advantages(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(got[0, 1:4], torch.tensor([6.0 - 0.5, 5.0 + 1.0, 3.0 - 2.0]))


def test_policy_loss_clips_the_ratio() -> None:
    old = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, clipped = ppo_policy_loss(old, old, advantages, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.0) and clipped.item() == 0.0
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5]])
    loss, clipped = ppo_policy_loss(ratios.log(), old, advantages, mask, clip=0.2)
    # min(ρA, clip(ρ)A) per token: 1.2 (capped), 0.5, -1.5 (not capped), -0.8
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 1.5 - 0.8) / 4)
    # clip_fraction counts every ratio outside the band, whatever the sign of A
    assert clipped.item() == 1.0
    logprobs = ratios.log().requires_grad_()
    ppo_policy_loss(logprobs, old, advantages, mask, clip=0.2)[0].backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[0, 1] != 0  # a capped gain has no gradient
    assert logprobs.grad[0, 2] != 0 and logprobs.grad[0, 3] == 0  # A < 0: only ρ < 1 - ε loses it
    assert int((logprobs.grad[0] == 0).sum()) == 2  # half the tokens counted by clip_fraction


def test_value_loss_takes_the_worse_of_clipped_and_unclipped() -> None:
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # token 0: unclipped error 0, clipped value 0.2 -> error 0.64; token 1: 4 vs (−0.2−1)² = 1.44
    loss = ppo_value_loss(values, old, returns, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 4.0) / 2)


def test_value_model_reads_every_position() -> None:
    rm = reward_model(tiny_gpt())
    value = value_model(rm)
    assert value is not rm and value.gpt is not rm.gpt
    idx = torch.tensor([[1, 2, 3, 4]])
    values = token_values(value, idx)
    assert values.shape == (1, 3)
    hidden, _ = rm.hidden_and_logits(idx)
    torch.testing.assert_close(values[0], rm.head(hidden[0, :3]).squeeze(-1))


def test_ppo_raises_the_reward_model_score() -> None:
    # The reward model prefers responses that start with token 5; PPO should learn to write it.
    rows, group, pairs = [], [], []
    for prompt in range(16):
        for k, first in enumerate((5, 1, 2, 3)):
            rows.append([4, 4, first, 2, EOS])
            group.append(prompt)
            if k:
                pairs.append((4 * prompt, 4 * prompt + k))
    idx = torch.tensor(rows)
    mask = torch.zeros_like(idx, dtype=torch.bool)
    mask[:, 2:] = True
    rm = reward_model(tiny_gpt(1))
    train_reward_model(
        rm,
        Comparisons(idx, mask, torch.tensor(group), torch.tensor(pairs)),
        steps=40,
        prompts_per_batch=8,
        lr=3e-3,
    )
    policy, reference = tiny_gpt(2), tiny_gpt(2)
    config = PPOConfig(
        steps=12,
        batch_size=32,
        minibatch_size=16,
        epochs=2,
        lr=3e-3,
        beta=0.01,
        max_new_tokens=3,
        seed=0,
    )
    history = ppo(
        policy,
        reference,
        rm,
        value_model(rm),
        [[4, 4]],
        EOS,
        config,
        evaluate=lambda chosen, rollout: {
            "share_5": float((rollout.idx[:, 2] == 5).float().mean())
        },
    )
    assert len(history.score) == 12 and len(history.extra["share_5"]) == 12
    assert history.score[-1] > history.score[0] + 1.0
    assert history.extra["share_5"][-1] > 0.8 > history.extra["share_5"][0]
    assert history.kl[0] == pytest.approx(0.0, abs=1e-5) and history.kl[-1] > 0.5
    rollout = generate_responses(
        policy, [[4, 4]] * 64, 3, EOS, generator=torch.Generator().manual_seed(1)
    )
    seen = (rollout.idx[:, 2] == 5).float().mean()
    assert seen > 0.8


def test_ppo_config_errors() -> None:
    with pytest.raises(ValueError, match="steps"):
        PPOConfig(steps=0)
    with pytest.raises(ValueError, match="beta"):
        PPOConfig(beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(lam=2.0)
