"""Quantization: absmax rounding per row and per group, int8 linear layers, fake-quantized models,
and LLM.int8()'s vector-wise int8 product with its mixed-precision decomposition."""

import pytest
import torch
from torch import nn

from gptlib import GPT, GPTConfig
from gptlib.quantization import (
    Int8Linear,
    dequantize_absmax,
    dequantize_per_channel,
    fake_quantize_weights,
    int8_matmul,
    model_bytes,
    quantize_absmax,
    quantize_int8,
    quantize_per_channel,
)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=11)
    settings.update(overrides)
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).detach().norm() / exact.detach().norm())


def test_per_channel_round_trip_is_within_half_a_step() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 7) * torch.tensor([[0.01], [0.1], [1.0], [10.0], [0.0]])
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (5,)
    assert q.abs().amax(dim=1)[:4].tolist() == [127] * 4  # each row's largest weight is ±127
    error = (dequantize_per_channel(q, scale) - w).abs()
    assert torch.all(error <= scale[:, None] / 2 + 1e-7)
    assert torch.all(dequantize_per_channel(q, scale)[4] == 0)
    with pytest.raises(ValueError, match="2-D float"):
        quantize_per_channel(torch.ones(3))


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, None), (4, 8), (3, 4), (2, 16)])
def test_absmax_groups_round_within_half_their_own_step(bits, group_size) -> None:
    torch.manual_seed(1)
    w = torch.randn(6, 16) * torch.logspace(-2, 1, 16)  # columns of very different sizes
    q, scale = quantize_absmax(w, bits, group_size)
    groups = 1 if group_size is None else 16 // group_size
    assert q.dtype == torch.int8 and scale.shape == (6, groups)
    level = 2 ** (bits - 1) - 1
    assert int(q.abs().max()) == level
    step = scale.repeat_interleave(16 // groups, dim=1)
    assert torch.all((dequantize_absmax(q, scale) - w).abs() <= step / 2 + 1e-6)


def test_smaller_groups_confine_an_outlier() -> None:
    torch.manual_seed(2)
    w = torch.randn(64, 128) * 0.02
    w[:, 5] *= 50  # one input column of outliers
    errors = [relative_error(dequantize_absmax(*quantize_absmax(w, 4, g)), w)
              for g in (None, 64, 32)]  # fmt: skip
    assert errors[0] > 1.2 * errors[1] > 1.2 * 1.2 * errors[2]  # each halving helps
    rest = torch.ones(128, dtype=torch.bool)
    rest[:32] = False  # the groups without the outlier are rounded on their own scale
    grouped = dequantize_absmax(*quantize_absmax(w, 4, 32))
    per_row = dequantize_absmax(*quantize_absmax(w, 4))
    assert relative_error(grouped[:, rest], w[:, rest]) < 0.2 * relative_error(
        per_row[:, rest], w[:, rest]
    )


def test_absmax_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        quantize_absmax(torch.ones(2, 10), 4, 3)
    with pytest.raises(ValueError, match="from 2 to 8"):
        quantize_absmax(torch.ones(2, 10), 9)
    with pytest.raises(ValueError, match="from 2 to 8"):
        quantize_absmax(torch.ones(2, 10), 1)
    with pytest.raises(TypeError, match="group_size"):
        quantize_absmax(torch.ones(2, 10), 4, 2.0)


def test_quantize_int8_replaces_linears_keeps_tied_head_and_original() -> None:
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kinds = {name: type(m) for name, m in quantized.named_modules()}
    assert kinds["blocks.0.mlp.fc_in"] is Int8Linear
    assert kinds["lm_head"] is nn.Linear  # tied to tok_emb: stays float
    assert quantized.lm_head.weight is quantized.tok_emb.weight
    assert not any(isinstance(m, nn.Linear) and m is not quantized.lm_head
                   for m in quantized.modules())  # fmt: skip
    assert model_bytes(quantized) < model_bytes(model)
    x = torch.randint(0, 11, (2, 9))
    assert torch.allclose(quantized(x).logits, model(x).logits, atol=0.05)


def test_untied_head_is_quantized_and_bytes_count_shared_once() -> None:
    model = tiny_gpt(tie_embeddings=False)
    assert isinstance(quantize_int8(model).lm_head, Int8Linear)
    tied = tiny_gpt()
    n_params = sum(p.numel() for p in tied.parameters())  # parameters() lists a shared one once
    assert model_bytes(tied) == 4 * n_params
    layer = nn.Linear(8, 4)
    assert model_bytes(Int8Linear.from_linear(layer)) == 8 * 4 + 4 * 4 + 4 * 4
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_int8("model")


def test_fake_quantize_weights_rounds_a_copy() -> None:
    model = tiny_gpt()
    rounded = fake_quantize_weights(model, bits=4, group_size=8)
    w, r = model.blocks[0].mlp.fc_in.weight, rounded.blocks[0].mlp.fc_in.weight
    assert not torch.equal(w, r)
    assert torch.equal(r, dequantize_absmax(*quantize_absmax(w, 4, 8)))
    assert torch.equal(rounded.lm_head.weight, model.lm_head.weight)  # tied: left alone
    assert rounded.lm_head.weight is rounded.tok_emb.weight
    coarse = fake_quantize_weights(model, bits=4)
    assert relative_error(coarse.blocks[0].mlp.fc_in.weight, w) > relative_error(r, w)
    with pytest.raises(ValueError, match="does not divide"):
        fake_quantize_weights(model, bits=4, group_size=5)


def with_outlier_features(x: torch.Tensor, weight: torch.Tensor, scale: float):
    """The same product x @ weight.T with two input features scaled up and their weights down.

    Feature dimensions of large magnitude, as LLM.int8 (Dettmers et al. 2022, §4) finds in
    large models; the float result is unchanged.
    """
    x, weight = x.clone(), weight.clone()
    x[:, [7, 90]] *= scale
    weight[:, [7, 90]] /= scale
    return x, weight


def test_int8_matmul_decomposition_rescues_outlier_features() -> None:
    torch.manual_seed(3)
    x, weight = torch.randn(64, 128), torch.randn(32, 128) * 0.05
    exact = x @ weight.T
    outlier_x, outlier_w = with_outlier_features(x, weight, 30.0)
    assert torch.allclose(outlier_x @ outlier_w.T, exact, atol=1e-5)

    def error(x: torch.Tensor, weight: torch.Tensor, threshold) -> float:
        return relative_error(int8_matmul(x, weight, threshold), exact)

    clean = error(x, weight, None)
    assert clean < 0.015  # vector-wise int8 is fine without outliers (0.009)
    assert error(outlier_x, outlier_w, None) > 5 * clean  # 0.086: every token's step is 30x
    assert error(outlier_x, outlier_w, 6.0) < 1.2 * clean  # the two columns go in 16-bit
    assert error(x, weight, 6.0) == clean  # no value reaches 6 here: nothing decomposed
    three_d = int8_matmul(outlier_x.reshape(4, 16, 128), outlier_w, 6.0)
    assert torch.allclose(three_d.reshape(64, 32), int8_matmul(outlier_x, outlier_w, 6.0))
    with pytest.raises(ValueError, match="share `in`"):
        int8_matmul(x, weight.T)
    with pytest.raises(ValueError, match="positive number"):
        int8_matmul(x, weight, 0.0)


def _broken_weight() -> torch.Tensor:
    weight = torch.randn(4, 3)
    weight[1, 1] = float("nan")
    return weight


_Q, _SCALE = quantize_per_channel(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
# (call, error, what the message names): before, a NaN weight quantized to a row of NaN and a
# float q was dequantized as it was.
BAD_QUANTIZATION_CALLS = {
    "NaN weight": (lambda: quantize_per_channel(_broken_weight()), ValueError, "NaN"),
    "weight as a list": (lambda: quantize_per_channel([[1.0]]), TypeError, "weight"),
    "float q": (lambda: dequantize_per_channel(_Q.float() + 0.5, _SCALE), TypeError, "int8"),
    "short scale": (lambda: dequantize_per_channel(_Q, _SCALE[:2]), ValueError, r"\(4,\)"),
    "0-d scale": (lambda: dequantize_per_channel(_Q, _SCALE[0]), ValueError, "scale"),
    "model_bytes of a dict": (lambda: model_bytes({"a": 1}), TypeError, "Module"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_QUANTIZATION_CALLS, ids=str)
def test_every_bad_quantization_argument_is_named(case: str) -> None:
    call, error, message = BAD_QUANTIZATION_CALLS[case]
    with pytest.raises(error, match=message):
        call()
