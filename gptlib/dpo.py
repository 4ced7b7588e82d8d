"""Direct preference optimisation (DPO): the policy fitted to preference pairs, no reward model.

Taught in notebooks/12_instructgpt.ipynb.

Rafailov et al. 2023 (§4) solve the KL-regularised objective of RLHF in closed form and write
the reward as a function of the policy, so the reward model's pairwise loss becomes a loss on the
policy itself. It learns from the same `gptlib.alignment.Comparisons` as the reward model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .alignment import Comparisons, optimizer_step, sequence_logprobs
from .model import GPT

__all__ = ["dpo_loss", "train_dpo"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss (mean over pairs, nats) and the implicit rewards of chosen and rejected (P,).

    Taught in notebooks/12_instructgpt.ipynb. Rafailov et al. 2023, Eq. 7: the KL-regularised RL
    objective max E[r] - β KL(π || π_ref) is maximised by π ∝ π_ref exp(r / β), so
    r(x, y) = β log π(y|x)/π_ref(y|x) + β log Z(x); put into the pairwise (Bradley-Terry) loss
    the Z(x) cancels:  L = -log σ(β log π(y_w)/π_ref(y_w) - β log π(y_l)/π_ref(y_l)).
    Inputs are summed response log-probs (`sequence_logprobs`), shape (P,); the implicit
    rewards β log π/π_ref are returned detached, for monitoring.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive (it scales the KL penalty), got {beta}")
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = F.softplus(rejected - chosen).mean()
    return loss, chosen.detach(), rejected.detach()


def train_dpo(
    policy: GPT,
    reference: GPT,
    data: Comparisons,
    beta: float,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Fit the policy to the preference pairs with `dpo_loss`; return loss and pair accuracy.

    Taught in notebooks/12_instructgpt.ipynb. The reference (the SFT model) is read once, for its
    log-probabilities; only the policy trains. Accuracy is the share of a batch's pairs whose
    chosen response has the larger implicit reward.
    """
    with torch.no_grad():
        ref_logps = sequence_logprobs(reference.eval(), data.idx, data.response_mask)
    generator = torch.Generator().manual_seed(seed)
    optimizer = policy.configure_optimizer(lr, 0.0, (0.9, 0.95))
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    policy.train()
    for _ in range(steps):
        pairs = data.pairs[torch.randint(len(data.pairs), (batch_size,), generator=generator)]
        rows = pairs.flatten()
        logps = sequence_logprobs(policy, data.idx[rows], data.response_mask[rows]).view(-1, 2)
        ref = ref_logps[rows].view(-1, 2)
        loss, chosen, rejected = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta)
        optimizer_step(optimizer, loss, policy)
        history["loss"].append(loss.item())
        history["accuracy"].append(float((chosen > rejected).float().mean()))
    return history
