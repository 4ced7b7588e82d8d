"""Tests for gptlib.throughput: FLOPs per training token (6N + 12LTd), MFU, tokens/s."""

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.throughput import PEAK_FLOPS, Throughput, flops_per_token, matmul_params, peak_flops


def meta_model(preset: str, **overrides) -> GPT:
    with torch.device("meta"):
        return GPT(GPTConfig.from_preset(preset, **overrides))


def test_gpt2_small_costs_6n_plus_attention_per_token() -> None:
    model = meta_model("gpt2")
    # N: every weight but the token and position tables, plus the tied head once more.
    n = model.num_params() - 50257 * 768 - 1024 * 768 + 50257 * 768
    assert matmul_params(model) == n == 123_653_376
    assert flops_per_token(model, 1024) == 6 * n + 12 * 12 * 1024 * 768  # 0.86 GFLOPs


def test_untied_heads_count_once_and_experts_only_when_chosen() -> None:
    untied = meta_model("gpt2", n_layer=2, tie_embeddings=False)
    assert matmul_params(untied) == untied.num_params(non_embedding=True)
    dense = meta_model("mixtral", n_layer=2, n_embd=64, n_head=4, n_experts=1,
                       n_experts_per_token=1, d_ff=128)  # fmt: skip
    moe = meta_model("mixtral", n_layer=2, n_embd=64, n_head=4, n_experts=8,
                     n_experts_per_token=2, d_ff=128)  # fmt: skip
    expert = 3 * 64 * 128  # gate, up and down projections, no biases
    router_growth = 2 * 64 * (8 - 1)  # the router has one row per expert
    assert matmul_params(moe) - matmul_params(dense) == 2 * expert + router_growth


def test_mfu_is_reported_only_where_the_peak_is_known(monkeypatch) -> None:
    model = meta_model("gpt2", n_layer=1, n_embd=64, n_head=2, block_size=32, vocab_size=100)
    meter = Throughput(model, 32, tokens_per_step=1000, device=torch.device("cpu"))
    meter.step(0.5)
    meter.step(1.5)
    assert meter.report() == "1,000 tokens/s"
    meter.step(1.0, tokens=250)  # a batch narrower than the block (gptlib.data.BatchSource)
    assert meter.report() == "250 tokens/s"
    assert peak_flops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert peak_flops(torch.device("cuda", 0)) == PEAK_FLOPS["A100"] == 312e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_flops(torch.device("cuda", 0)) == 756e12
    meter.peak = 1e12
    meter.step(1.0)
    rate = 1000
    assert meter.report() == f"1,000 tokens/s, MFU {rate * meter.flops_per_token / 1e12:.1%}"
    assert pytest.approx(meter.flops_per_token) == flops_per_token(model, 32)


# Before: a negative or fractional seq_len and a step of NaN or -1 seconds gave a wrong count
# or rate silently; a config or None for the model was an AttributeError.
@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda m: flops_per_token(m, -5), ValueError, "seq_len"),
        (lambda m: flops_per_token(m, 2.5), TypeError, "seq_len"),
        (lambda m: flops_per_token(None, 8), TypeError, "GPT"),
        (lambda m: matmul_params(m.config), TypeError, "not its config"),
        (lambda m: Throughput(m, 8, 0, torch.device("cpu")), ValueError, "tokens_per_step"),
        (lambda m: Throughput(m, 8, 16, "cpu").step(float("nan")), ValueError, "seconds"),
        (lambda m: Throughput(m, 8, 16, "cpu").step(-1.0), ValueError, "seconds"),
    ],
    ids=["negative seq_len", "fractional seq_len", "no model", "a config", "no tokens",
         "NaN seconds", "negative seconds"],
)  # fmt: skip
def test_bad_throughput_arguments_are_named(call, error, name) -> None:
    with pytest.raises(error, match=name):
        call(meta_model("gpt2", n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=20))


def test_a_device_may_be_named_by_a_string() -> None:
    meter = Throughput(meta_model("gpt2", n_layer=1), 8, 16, "cpu")
    meter.step(2.0)
    assert meter.report() == "8 tokens/s"
