"""Training speed: tokens per second, FLOPs per token and model FLOPs utilisation (MFU).

Taught in README.md's "Train your own"; benchmarks/train_step.py prints the same figures.

One training token costs about ``6 N + 12 L T d`` floating-point operations, forward and backward
together (Chowdhery et al. 2022, Appendix B, who write it 6N + 12LHQT):

- ``6 N``: each of the N weights that multiply the token's activations does one multiply-add
  (2 FLOPs) in the forward pass and two in the backward pass (gradients with respect to the
  input and to the weight), the count of Kaplan et al. 2020, §2.1 (C ≈ 6N per token). N here
  counts the weights of matrix products: every parameter except the embedding tables (a
  lookup costs no multiply), with the output head counted even when it shares the token
  embedding's matrix; for a mixture of experts only the n_experts_per_token experts a token
  visits count.
- ``12 L T d``: attention's own products, with the query against T keys and the weights
  against T values, in each of L layers, H heads of Q dimensions (H·Q = d = n_embd), forward
  and backward. T is the training window. As in PaLM's count, the causal mask's zeros are
  not subtracted; local and strided layers count as dense, because gptlib computes them as
  masked dense attention.

MFU is the achieved FLOPs (FLOPs per token x tokens per second) over the hardware's peak.
`PEAK_FLOPS` holds dense bfloat16 tensor-core peaks from NVIDIA's data sheets; add a row for
another GPU. The CPU has no such figure, so MFU is printed on CUDA only.
"""

from __future__ import annotations

import torch

from .layers import MixtureOfExperts
from .model import GPT
from .sampling import check_integer, check_real

__all__ = ["PEAK_FLOPS", "Throughput", "flops_per_token", "matmul_params", "peak_flops"]

# Dense (no sparsity) bfloat16 tensor-core peak per GPU, from NVIDIA's data sheets (A100:
# 312 TFLOPS; H100 SXM, whose torch name is "NVIDIA H100 80GB HBM3", and H200: 989; H100
# PCIe: 756). Matched against torch.cuda.get_device_name: the first key contained in it wins.
PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 PCIe": 756e12,
    "A100": 312e12,
}


def matmul_params(model: GPT) -> int:
    """N of the 6N count: the weights one token is multiplied by (see the module docstring).

    Raises TypeError for anything but a gptlib GPT (a config: pass the model).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a gptlib GPT (not its config), got {type(model).__name__}")
    n = model.num_params(non_embedding=True)
    if model.config.tie_embeddings:
        n += model.lm_head.weight.numel()  # the head is a matrix product, whatever it shares
    for module in model.modules():
        if isinstance(module, MixtureOfExperts):
            expert = sum(p.numel() for p in module.experts[0].parameters())
            n -= expert * (len(module.experts) - module.top_k)
    return n


def flops_per_token(model: GPT, seq_len: int) -> float:
    """Training FLOPs per token, 6N + 12·L·T·d (Chowdhery et al. 2022, Appendix B).

    seq_len T is a positive integer; TypeError or ValueError name anything else.
    """
    seq_len = check_integer("seq_len", seq_len, 1, "a positive integer (tokens per sequence)")
    n = matmul_params(model)
    config = model.config
    return 6 * n + 12 * config.n_layer * seq_len * config.n_embd


def peak_flops(device: torch.device) -> float | None:
    """The bfloat16 peak of a CUDA device from PEAK_FLOPS, or None where it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


class Throughput:
    """Training tokens per second over the steps since the last report (evaluation and saving
    excluded), and the MFU they mean on a GPU whose peak is known."""

    def __init__(
        self, model: GPT, seq_len: int, tokens_per_step: int, device: torch.device, world_size=1
    ) -> None:
        self.tokens_per_step = check_integer(
            "tokens_per_step", tokens_per_step, 1, "an integer >= 1"
        )
        self.flops_per_token = flops_per_token(model, seq_len)
        world_size = check_integer("world_size", world_size, 1, "an integer >= 1")
        peak = peak_flops(torch.device(device))
        self.peak = peak * world_size if peak is not None else None
        self._tokens, self._seconds = 0, 0.0

    def step(self, seconds: float, tokens: int | None = None) -> None:
        """Count one optimizer step that took `seconds` (wall clock, GPU work finished) and
        processed `tokens` tokens (None: `tokens_per_step`; a batch source of short examples
        may send fewer columns than the block, see `gptlib.data.BatchSource`).

        Raises ValueError for a time that is negative, NaN or inf (it would skew every rate)
        and for a token count that is not an integer >= 0.
        """
        seconds = check_real("seconds", seconds, "a finite number of seconds >= 0")
        if seconds < 0:
            raise ValueError(f"seconds must be a finite number of seconds >= 0, got {seconds}")
        if tokens is None:
            tokens = self.tokens_per_step
        else:
            tokens = check_integer("tokens", tokens, 0, "an integer >= 0")
        self._tokens += tokens
        self._seconds += seconds

    def report(self) -> str:
        """ "N tokens/s" (and ", MFU x%" on a known GPU) since the last report; starts anew."""
        rate = self._tokens / max(self._seconds, 1e-9)
        self._tokens, self._seconds = 0, 0.0
        text = f"{rate:,.0f} tokens/s"
        if self.peak:
            text += f", MFU {rate * self.flops_per_token / self.peak:.1%}"
        return text
