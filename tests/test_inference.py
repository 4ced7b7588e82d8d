"""Batched generation, and the names gptlib.inference gathers from the chapter's other modules."""

import pytest
import torch

import gptlib.quantization
import gptlib.speculative
from gptlib import GPT, GPTConfig, inference
from gptlib.inference import generate_batched, speculative_generate


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


_PROMPT = torch.tensor([[1, 2, 3]])
# A None model was an AttributeError; one flat prompt was read as several one-token prompts.
BAD_BATCHING_CALLS = {
    "one flat prompt": (lambda t: generate_batched(t, [1, 2, 3], 2), TypeError, r"\[ids\]"),
    "no model": (lambda t: generate_batched(None, [[1]], 2), TypeError, "GPT"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_BATCHING_CALLS, ids=str)
def test_every_bad_batching_argument_is_named(case: str) -> None:
    call, error, message = BAD_BATCHING_CALLS[case]
    with pytest.raises(error, match=message):
        call(tiny_gpt())


def test_prompts_may_be_a_tensor_and_a_failed_speculative_run_restores_the_mode() -> None:
    model = tiny_gpt()
    rows = generate_batched(model, torch.tensor([[1, 2], [3, 4]]), 2, temperature=0.0)
    assert rows == generate_batched(model, [[1, 2], [3, 4]], 2, temperature=0.0)
    model.train()
    with pytest.raises(ValueError, match="token ids must be in"):
        speculative_generate(model, tiny_gpt(seed=1), _PROMPT + 20, 3)
    assert model.training
