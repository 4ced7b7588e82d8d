"""Inference tricks: int8 weight quantization, bucketed batching, greedy speculative decoding."""

import pytest
import torch
from torch import nn

from gptlib import GPT, GPTConfig
from gptlib.inference import (
    Int8Linear,
    dequantize_per_channel,
    generate_batched,
    model_bytes,
    quantize_int8,
    quantize_per_channel,
    speculative_generate,
)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=11)
    settings.update(overrides)
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


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


def test_generate_batched_matches_one_by_one() -> None:
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4], [5, 6, 7], [8, 9]]
    batched = generate_batched(model, prompts, 5, temperature=0.0)
    for prompt, row in zip(prompts, batched, strict=True):
        alone = model.generate(torch.tensor([prompt]), 5, temperature=0.0)[0].tolist()
        assert row == alone
    with pytest.raises(ValueError, match="at least one token"):
        generate_batched(model, [[1], []], 2)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_speculative_equals_target_greedy(k: int, position: str) -> None:
    target = tiny_gpt(0, position=position)
    draft = tiny_gpt(1, n_layer=1, position=position)
    idx = torch.tensor([[1, 2, 3, 4, 5]])
    # 40 new tokens run past block_size=24: the learned-position window has to slide
    out, stats = speculative_generate(target, draft, idx, 40, k=k)
    assert torch.equal(out, target.generate(idx, 40, temperature=0.0))
    assert stats.new_tokens == 40
    assert stats.accepted <= stats.proposed
    assert stats.target_calls_saved == 40 - stats.target_calls


def test_speculative_with_itself_as_draft_accepts_everything() -> None:
    target = tiny_gpt(0, position="rotary")
    idx = torch.tensor([[3, 1, 4]])
    out, stats = speculative_generate(target, target, idx, 11, k=4)
    assert torch.equal(out, target.generate(idx, 11, temperature=0.0))
    assert stats.acceptance_rate == 1.0
    assert stats.target_calls == 3  # 5 + 5 + 1 tokens


def test_speculative_errors() -> None:
    target = tiny_gpt()
    with pytest.raises(ValueError, match=r"shape \(1, T\)"):
        speculative_generate(target, target, torch.ones(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(target, tiny_gpt(vocab_size=12), torch.ones(1, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        speculative_generate(target, target, torch.ones(1, 3, dtype=torch.long), 4, k=0)
    out, stats = speculative_generate(target, target, torch.ones(1, 3, dtype=torch.long), 0)
    assert out.shape == (1, 3) and stats.target_calls == 0


def _broken_weight() -> torch.Tensor:
    weight = torch.randn(4, 3)
    weight[1, 1] = float("nan")
    return weight


_Q, _SCALE = quantize_per_channel(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
_PROMPT = torch.tensor([[1, 2, 3]])
# (call, error, what the message names): before, a NaN weight quantized to a row of NaN, a
# float q was dequantized as it was, k=2.5 guessed 2.5 tokens until generate refused them
# under the name max_new_tokens, and a None model was an AttributeError.
BAD_INFERENCE_CALLS = {
    "NaN weight": (lambda t, d: quantize_per_channel(_broken_weight()), ValueError, "NaN"),
    "weight as a list": (lambda t, d: quantize_per_channel([[1.0]]), TypeError, "weight"),
    "float q": (lambda t, d: dequantize_per_channel(_Q.float() + 0.5, _SCALE), TypeError, "int8"),
    "short scale": (lambda t, d: dequantize_per_channel(_Q, _SCALE[:2]), ValueError, r"\(4,\)"),
    "0-d scale": (lambda t, d: dequantize_per_channel(_Q, _SCALE[0]), ValueError, "scale"),
    "model_bytes of a dict": (lambda t, d: model_bytes({"a": 1}), TypeError, "Module"),
    "one flat prompt": (lambda t, d: generate_batched(t, [1, 2, 3], 2), TypeError, r"\[ids\]"),
    "no model": (lambda t, d: generate_batched(None, [[1]], 2), TypeError, "GPT"),
    "prompt as a list": (lambda t, d: speculative_generate(t, d, [[1, 2]], 3), TypeError, "idx"),
    "fractional k": (lambda t, d: speculative_generate(t, d, _PROMPT, 3, k=2.5), TypeError, "k must"),
    "bool k": (lambda t, d: speculative_generate(t, d, _PROMPT, 3, k=True), TypeError, "k must"),
    "fractional max_new_tokens": (
        lambda t, d: speculative_generate(t, d, _PROMPT, 2.5), TypeError, "got 2.5",
    ),
    "no draft": (lambda t, d: speculative_generate(t, None, _PROMPT, 3), TypeError, "draft"),
    "no target": (lambda t, d: speculative_generate(None, d, _PROMPT, 3), TypeError, "target"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INFERENCE_CALLS, ids=str)
def test_every_bad_inference_argument_is_named(case: str) -> None:
    call, error, message = BAD_INFERENCE_CALLS[case]
    with pytest.raises(error, match=message):
        call(tiny_gpt(), tiny_gpt(seed=1))


def test_prompts_may_be_a_tensor_and_a_failed_speculative_run_restores_the_mode() -> None:
    model = tiny_gpt()
    rows = generate_batched(model, torch.tensor([[1, 2], [3, 4]]), 2, temperature=0.0)
    assert rows == generate_batched(model, [[1, 2], [3, 4]], 2, temperature=0.0)
    model.train()
    with pytest.raises(ValueError, match="token ids must be in"):
        speculative_generate(model, tiny_gpt(seed=1), _PROMPT + 20, 3)
    assert model.training
