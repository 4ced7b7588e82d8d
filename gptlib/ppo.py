"""RLHF with PPO: per-token rewards with a KL penalty, GAE advantages, the clipped losses, a loop.

Taught in notebooks/12_instructgpt.ipynb.

InstructGPT's third stage (Ouyang et al. 2022, §3.5, Eq. 2) maximises

    E_(x, y ~ π_RL) [ r_θ(x, y) - β log(π_RL(y|x) / π_SFT(y|x)) ]

with PPO (Schulman et al. 2017), as Ziegler et al. 2019 and Stiennon et al. 2020 did before it.
Each response is an episode whose actions are its tokens: every token pays the KL penalty
-β (log π_RL - log π_SFT) of its own, and the reward model's score r_θ(x, y) arrives at the
last token. A value model estimates the return from each token on, generalised advantage
estimation (GAE, Schulman et al. 2016) turns rewards and values into advantages, and PPO's
clipped objective keeps each update near the policy that sampled the batch.

Shapes: a rollout holds B rows of T tokens (`gptlib.alignment.Rollout`); the actions are the
T - 1 next-token choices, so per-token tensors here are (B, T - 1) and `action_mask` (B, T - 1)
is True where the token chosen is part of the response.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .alignment import (
    Rollout,
    generate_responses,
    optimizer_step,
    sequence_scores,
    token_logprobs,
)
from .finetune import SequenceClassifier
from .model import GPT

__all__ = [
    "PPOConfig",
    "PPOHistory",
    "gae_advantages",
    "kl_penalised_rewards",
    "ppo",
    "ppo_policy_loss",
    "ppo_value_loss",
    "token_values",
    "value_model",
]


def value_model(reward: SequenceClassifier) -> SequenceClassifier:
    """A copy of the reward model to serve as the value model V(s), as InstructGPT initialises it.

    Taught in notebooks/12_instructgpt.ipynb. InstructGPT starts its value function from the reward
    model (Ouyang et al. 2022, §3.5). Its scalar head is read at every position, not only the
    last.
    """
    if reward.head.out_features != 1:
        raise ValueError(f"need a scalar head (n_classes=1), got {reward.head.out_features}")
    return copy.deepcopy(reward)


def token_values(value: SequenceClassifier, idx: torch.Tensor) -> torch.Tensor:
    """The value head at every action: (B, T) ids -> (B, T - 1), the value of each prefix.

    Taught in notebooks/12_instructgpt.ipynb. Entry [b, t] estimates the return still to come after
    seeing idx[b, : t + 1], before choosing token t + 1.
    """
    hidden, _ = value.hidden_and_logits(idx[:, :-1])
    return value.head(hidden).squeeze(-1).float()


def kl_penalised_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scores: torch.Tensor,
    action_mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-token rewards: -β (log π - log π_ref) at each response token, plus the score at the last.

    Taught in notebooks/12_instructgpt.ipynb. Ouyang et al. 2022, §3.5, Eq. 2 (after Ziegler et al.
    2019 and Stiennon et al. 2020). `logprobs`, `ref_logprobs` and `action_mask` are (B, T - 1)
    (nats, nats, bool); `scores` (B,) is the reward model's r(x, y). Summed over a row the
    rewards are r(x, y) - β log π(y|x)/π_ref(y|x), whose mean over samples of y is the
    objective r - β KL. Returns (B, T - 1), zero outside the response.
    """
    if not logprobs.shape == ref_logprobs.shape == action_mask.shape:
        raise ValueError("logprobs, ref_logprobs and action_mask must have the same (B, T-1)")
    if not bool(action_mask.any(dim=1).all()):
        raise ValueError("every row needs at least one response token to receive its score")
    rewards = -beta * (logprobs - ref_logprobs) * action_mask
    positions = torch.arange(action_mask.size(1), device=action_mask.device)
    last = (positions * action_mask).amax(dim=1)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    action_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns of each response token: two (B, T - 1).

    Taught in notebooks/12_instructgpt.ipynb. Schulman et al. 2016, Eq. 16: with the TD error
    δ_t = r_t + γ V(s_{t+1}) - V(s_t), the advantage is A_t = Σ_l (γλ)^l δ_{t+l}; the episode
    ends after the last response token (V = 0 beyond it). The returns A_t + V(s_t) are the
    value model's targets. InstructGPT uses γ = 1 (no discount; Ouyang et al. 2022, App. C).
    """
    if not rewards.shape == values.shape == action_mask.shape:
        raise ValueError("rewards, values and action_mask must have the same (B, T-1) shape")
    mask = action_mask.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.size(0), device=rewards.device)
    for t in reversed(range(rewards.size(1))):
        next_mask = mask[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_mask if t + 1 < rewards.size(1) else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss over response tokens, and the share of ratios outside the band.

    Taught in notebooks/12_instructgpt.ipynb.
    Schulman et al. 2017, Eq. 7: with the probability ratio
    ρ = π(a|s) / π_old(a|s), maximise min(ρ A, clip(ρ, 1 - ε, 1 + ε) A); the loss is its
    negative, averaged over the response tokens. Inputs are (B, T - 1); ε = `clip` (0.2 in
    InstructGPT, Ouyang et al. 2022, App. C). The second value is the usual `clip_fraction`
    diagnostic: the share of response tokens with |ρ - 1| > ε, whatever the sign of A. Only
    those on the side that helps (ρ > 1 + ε with A > 0, ρ < 1 - ε with A < 0) lose their
    gradient; on the other side the min keeps the unclipped term.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = _masked_mean(torch.maximum(unclipped, clipped), action_mask)
    clip_fraction = _masked_mean(((ratio - 1.0).abs() > clip).float(), action_mask)
    return loss, clip_fraction.detach()


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    action_mask: torch.Tensor,
    clip: float = 0.2,
) -> torch.Tensor:
    """Half the squared error of the values against the returns, with PPO-style clipping.

    Taught in notebooks/12_instructgpt.ipynb.
    The value may move at most `clip` from the value that was
    used to compute the advantages; the loss takes the worse of the clipped and unclipped
    errors, as in the PPO baselines code (Schulman et al. 2017). Inputs are (B, T - 1).
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    error = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * _masked_mean(error, action_mask)


@dataclass
class PPOConfig:
    """Settings of `ppo`; InstructGPT's values (Ouyang et al. 2022, App. C) where they apply."""

    steps: int = 60  # rollouts, each followed by `epochs` passes of minibatch updates
    batch_size: int = 64  # episodes (prompts) per rollout
    minibatch_size: int = 32
    epochs: int = 2
    lr: float = 2e-4  # policy learning rate
    value_lr: float = 3e-4
    beta: float = 0.02  # KL coefficient β (InstructGPT: 0.02)
    clip: float = 0.2  # ε of the clipped objective (InstructGPT: 0.2)
    value_clip: float = 0.2
    gamma: float = 1.0  # no discount (InstructGPT)
    lam: float = 0.95  # GAE λ
    max_new_tokens: int = 64
    temperature: float = 1.0  # rollout temperature (InstructGPT: 1)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "minibatch_size", "epochs", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.beta < 0 or self.clip <= 0 or self.lr <= 0 or self.value_lr <= 0:
            raise ValueError("need beta >= 0 and positive clip, lr and value_lr")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")


@dataclass
class PPOHistory:
    """One entry per rollout: the reward model's score, the KL, and what `evaluate` reported."""

    score: list[float] = field(default_factory=list)  # mean r(x, y) of the rollout
    kl: list[float] = field(default_factory=list)  # mean Σ_t log π/π_ref of a response, nats
    reward: list[float] = field(default_factory=list)  # mean score - β·KL: the objective
    length: list[float] = field(default_factory=list)  # mean response tokens
    policy_loss: list[float] = field(default_factory=list)
    value_loss: list[float] = field(default_factory=list)
    clip_fraction: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return dataclasses.asdict(self)


def ppo(
    policy: GPT,
    reference: GPT,
    reward: SequenceClassifier,
    value: SequenceClassifier,
    prompts: Sequence[Sequence[int]],
    eos_id: int,
    config: PPOConfig | None = None,
    evaluate: Callable[[list[int], Rollout], dict[str, float]] | None = None,
) -> PPOHistory:
    """Train `policy` (and `value`) with PPO against the reward model, with a KL penalty.

    Taught in notebooks/12_instructgpt.ipynb. Each step samples `batch_size` prompts, generates a
    response to each with `policy.generate`, scores it with `reward` (at the last token),
    computes per-token log-probs of policy and `reference` with one forward pass each, the
    KL-penalised rewards and GAE advantages (normalised over the batch), then takes `epochs`
    passes of minibatch updates of the clipped policy loss and the clipped value loss.
    `evaluate(prompt_indices, rollout)` may report more numbers per step (e.g. a hidden
    judge's score); nothing it returns reaches the training. Dropout is off throughout.
    """
    config = config or PPOConfig()
    if not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    generator = torch.Generator().manual_seed(config.seed)
    for model in (policy, reference, reward, value):
        model.eval()
    policy_opt = policy.configure_optimizer(config.lr, 0.0, (0.9, 0.95))
    value_opt = torch.optim.AdamW(value.parameters(), lr=config.value_lr, weight_decay=0.0)
    history = PPOHistory()
    for _ in range(config.steps):
        chosen = torch.randint(len(prompts), (config.batch_size,), generator=generator).tolist()
        rollout = generate_responses(
            policy,
            [prompts[i] for i in chosen],
            config.max_new_tokens,
            eos_id,
            config.temperature,
            generator=generator,
        )
        idx, mask = rollout.idx, rollout.response_mask[:, 1:]
        with torch.no_grad():
            old_logprobs = token_logprobs(policy, idx)
            ref_logprobs = token_logprobs(reference, idx)
            old_values = token_values(value, idx)
            scores = sequence_scores(reward, idx, rollout.last).float()
            rewards = kl_penalised_rewards(old_logprobs, ref_logprobs, scores, mask, config.beta)
            advantages, returns = gae_advantages(
                rewards, old_values, mask, config.gamma, config.lam
            )
            mean = _masked_mean(advantages, mask)
            std = _masked_mean((advantages - mean) ** 2, mask).sqrt()
            advantages = (advantages - mean) / (std + 1e-8) * mask
        losses: dict[str, list[float]] = {"policy": [], "value": [], "clip": []}
        for _ in range(config.epochs):
            order = torch.randperm(len(chosen), generator=generator)
            for rows in order.split(config.minibatch_size):
                policy_loss, clip_fraction = ppo_policy_loss(
                    token_logprobs(policy, idx[rows]),
                    old_logprobs[rows],
                    advantages[rows],
                    mask[rows],
                    config.clip,
                )
                value_loss = ppo_value_loss(
                    token_values(value, idx[rows]),
                    old_values[rows],
                    returns[rows],
                    mask[rows],
                    config.value_clip,
                )
                optimizer_step(policy_opt, policy_loss, policy)
                optimizer_step(value_opt, value_loss, value)
                losses["policy"].append(policy_loss.item())
                losses["value"].append(value_loss.item())
                losses["clip"].append(clip_fraction.item())
        kl = ((old_logprobs - ref_logprobs) * mask).sum(dim=1)
        for name, number in (
            ("score", scores.mean()),
            ("kl", kl.mean()),
            ("reward", (scores - config.beta * kl).mean()),
            ("length", mask.sum(dim=1).float().mean()),
            ("policy_loss", sum(losses["policy"]) / len(losses["policy"])),
            ("value_loss", sum(losses["value"]) / len(losses["value"])),
            ("clip_fraction", sum(losses["clip"]) / len(losses["clip"])),
        ):
            getattr(history, name).append(float(number))
        for name, number in (evaluate(chosen, rollout) if evaluate else {}).items():
            history.extra.setdefault(name, []).append(float(number))
    return history
