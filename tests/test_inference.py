"""Batched generation, and the names gptlib.inference gathers from the chapter's other modules."""

import pytest
import torch

import gptlib.quantization
import gptlib.speculative
from gptlib import GPT, GPTConfig, inference
from gptlib.inference import (
    dequantize_per_channel,
    generate_batched,
    model_bytes,
    quantize_per_channel,
    speculative_generate,
)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=11)
    settings.update(overrides)
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


def test_generate_batched_matches_one_by_one() -> None:
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4], [5, 6, 7], [8, 9]]
    batched = generate_batched(model, prompts, 5, temperature=0.0)
    for prompt, row in zip(prompts, batched, strict=True):
        alone = model.generate(torch.tensor([prompt]), 5, temperature=0.0)[0].tolist()
        assert row == alone
    with pytest.raises(ValueError, match="at least one token"):
        generate_batched(model, [[1], []], 2)


def test_inference_reexports_quantization_and_speculative_decoding() -> None:
    for module in (gptlib.quantization, gptlib.speculative):
        for name in module.__all__:
            assert getattr(inference, name) is getattr(module, name), name
            assert name in inference.__all__


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
