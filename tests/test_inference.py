"""Batched generation, and the names gptlib.inference gathers from the chapter's other modules."""

import pytest
import torch

import gptlib.quantization
import gptlib.speculative
from gptlib import GPT, GPTConfig, inference
from gptlib.inference import generate_batched


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
