"""gptlib.interventions against hand computations: head outputs add up to the attention output,
zero and mean ablation equal editing the output projection by hand, the residual stream and the
logit lens end in the model's logits, direct logit attribution decomposes a logit exactly, and
activation patching restores exactly what it should."""

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.interventions import (
    ablated_heads,
    direct_logit_attribution,
    head_outputs,
    logit_lens,
    patch_heads,
    patch_residual,
    residual_stream,
)


def _model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=40) | overrides
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


def _tokens(batch: int = 2, T: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 40, (batch, T), generator=torch.Generator().manual_seed(seed))


def test_head_outputs_add_up_to_the_attention_output() -> None:
    model, tokens = _model(), _tokens()
    captured = []
    handle = model.blocks[1].attn.register_forward_hook(lambda m, a, out: captured.append(out[0]))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    z = head_outputs(model, tokens)
    assert z.shape == (2, 2, 12, 4, 8)
    proj = model.blocks[1].attn.out_proj
    by_hand = sum(z[1, :, :, h] @ proj.weight[:, 8 * h : 8 * (h + 1)].T for h in range(4))
    assert torch.allclose(by_hand + proj.bias, captured[0], atol=1e-5)


def test_zero_ablation_equals_zeroing_the_heads_output_columns() -> None:
    model, tokens = _model(), _tokens()
    with torch.no_grad():
        before = model(tokens).logits
        with ablated_heads(model, [(1, 2), (0, 0)]):
            ablated = model(tokens).logits
        edited = _model()
        edited.blocks[1].attn.out_proj.weight[:, 16:24] = 0
        edited.blocks[0].attn.out_proj.weight[:, 0:8] = 0
        assert torch.allclose(ablated, edited(tokens).logits, atol=1e-5)
        assert torch.equal(model(tokens).logits, before), "the hooks must be gone on exit"


def test_mean_ablation_equals_moving_the_mean_into_the_bias() -> None:
    model, tokens, reference = _model(), _tokens(), _tokens(batch=4, seed=1)
    mean = head_outputs(model, reference)[1, :, :, 3].mean(dim=(0, 1))  # (head_dim,)
    with torch.no_grad():
        with ablated_heads(model, [(1, 3)], method="mean", reference=reference):
            ablated = model(tokens).logits
        edited = _model()
        proj = edited.blocks[1].attn.out_proj
        proj.bias += proj.weight[:, 24:32] @ mean
        proj.weight[:, 24:32] = 0
        assert torch.allclose(ablated, edited(tokens).logits, atol=1e-5)


def test_ablation_names_bad_arguments() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"no head \(2, 0\)"):
        with ablated_heads(model, [(2, 0)]):
            pass
    with pytest.raises(ValueError, match="'zero' or 'mean'"):
        with ablated_heads(model, [(0, 0)], method="resample"):
            pass
    with pytest.raises(ValueError, match="needs reference tokens"):
        with ablated_heads(model, [(0, 0)], method="mean"):
            pass


@pytest.mark.parametrize("preset", ["gpt2", "gpt-neox", "gpt1"])
def test_the_residual_stream_runs_from_embeddings_to_logits(preset: str) -> None:
    model = _model(**({"position": "rotary"} if preset == "gpt2" else {}))
    if preset != "gpt2":
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_preset(preset, n_layer=2, n_head=4, n_embd=32,
                                          block_size=64, vocab_size=40)).eval()  # fmt: skip
    tokens = _tokens()
    stream = residual_stream(model, tokens)
    assert stream.shape == (3, 2, 12, 32)
    with torch.no_grad():
        x = model.tok_emb(tokens)
        if model.pos_emb is not None:
            x = x + model.pos_emb(torch.arange(12))
        assert torch.allclose(stream[0], x)
        for i, block in enumerate(model.blocks):
            assert torch.allclose(stream[i + 1], block(stream[i], torch.arange(12))[0], atol=1e-5)
        logits = model(tokens).logits
    lens = logit_lens(model, tokens)
    assert lens.shape == (3, 2, 12, 40)
    assert torch.allclose(lens[-1], logits, atol=1e-5)
    assert torch.allclose(lens[0], model.lm_head(model.ln_f(stream[0])), atol=1e-5)


def test_direct_logit_attribution_decomposes_the_logit_exactly() -> None:
    model, tokens = _model(), _tokens()
    dla = direct_logit_attribution(model, tokens)
    assert dla.shape == (2, 4, 2, 11)
    with torch.no_grad():
        final = residual_stream(model, tokens)[-1][:, :-1]
        logits = model(tokens).logits[:, :-1]
        z = head_outputs(model, tokens)[:, :, :-1]
        heads = sum(
            z[layer, :, :, h] @ model.blocks[layer].attn.out_proj.weight[:, 8 * h : 8 * (h + 1)].T
            for layer in range(2)
            for h in range(4)
        )
        rest = final - heads  # embeddings, MLPs and biases
        norm, unembed = model.ln_f, model.lm_head.weight
        scale = (final.var(-1, unbiased=False, keepdim=True) + norm.eps).rsqrt()
        centred_unembed = unembed - unembed.mean(0)
        rest_term = (rest - rest.mean(-1, keepdim=True)) * scale * norm.weight + norm.bias
        rest_logit = (rest_term * centred_unembed[tokens[:, 1:]]).sum(-1)
    target = logits.gather(-1, tokens[:, 1:, None]).squeeze(-1) - logits.mean(-1)
    assert torch.allclose(dla.sum(dim=(0, 1)) + rest_logit, target, atol=1e-4)


def _last_logit_metric(clean: torch.Tensor):
    target = clean[:, -1]  # the clean run's last token, read off the corrupted run's last logits
    return lambda logits: logits[:, -2].gather(-1, target[:, None]).mean()


def test_patching_the_residual_stream_restores_what_it_should() -> None:
    model = _model(position="rotary")
    clean = _tokens(T=8)
    corrupted = clean.clone()
    corrupted[:, 3] = (corrupted[:, 3] + 1) % 40  # one token changed
    metric = _last_logit_metric(clean)
    with torch.no_grad():
        clean_value = float(metric(model(clean).logits))
        corrupted_value = float(metric(model(corrupted).logits))
    table = patch_residual(model, clean, corrupted, metric)
    assert table.shape == (3, 8)
    # the embeddings: only the changed position matters, and patching it undoes the change
    assert table[0, 3].item() == pytest.approx(clean_value, abs=1e-5)
    assert torch.allclose(
        table[0, torch.tensor([0, 1, 2, 4, 5, 6, 7])], torch.tensor(corrupted_value)
    )
    # after the last block, only the position that is read matters
    assert table[2, 6].item() == pytest.approx(clean_value, abs=1e-5)
    assert table[2, 5].item() == pytest.approx(corrupted_value, abs=1e-5)
    assert patch_residual(model, clean, corrupted, metric, positions=[3]).shape == (3, 1)
    with pytest.raises(ValueError, match="same shape"):
        patch_residual(model, clean, corrupted[:, :-1], metric)


def test_patching_heads_restores_nothing_from_a_silent_head_and_all_from_equal_runs() -> None:
    model = _model(position="rotary")
    with torch.no_grad():
        model.blocks[1].attn.out_proj.weight[:, 8:16] = 0  # head (1, 1) writes nothing
    clean = _tokens(T=8)
    corrupted = _tokens(T=8, seed=5)
    metric = _last_logit_metric(clean)
    with torch.no_grad():
        corrupted_value = float(metric(model(corrupted).logits))
    table = patch_heads(model, clean, corrupted, metric)
    assert table.shape == (2, 4)
    assert table[1, 1].item() == pytest.approx(corrupted_value, abs=1e-5)
    assert (table - corrupted_value).abs().max() > 1e-3, "other heads carry something"
    same = patch_heads(model, clean, clean, metric)
    with torch.no_grad():
        assert torch.allclose(same, torch.tensor(float(metric(model(clean).logits))), atol=1e-5)
    at_last = patch_heads(model, clean, corrupted, metric, positions=[7])  # not what is read
    assert torch.allclose(at_last, torch.tensor(corrupted_value), atol=1e-5)


def _mean_last_logit(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 0].mean()


_CLEAN, _CORRUPTED = _tokens(T=6), _tokens(T=6, seed=5)
# (call, error type, what the message must say): before, a head 0.5 was read as head 0, an
# empty batch gave a table of NaN, positions=[] a table that patched nothing, and the rest
# failed deep in torch.
BAD_INTERVENTION_CALLS = {
    "float head": (lambda m: ablated_heads(m, [(0, 0.5)]).__enter__(), TypeError, "head"),
    "one pair, not a list": (lambda m: ablated_heads(m, (0, 1)).__enter__(), TypeError, "pairs"),
    "head out of range": (lambda m: ablated_heads(m, [(5, 0)]).__enter__(), ValueError, "no head"),
    "1-D tokens": (lambda m: head_outputs(m, torch.arange(4)), ValueError, r"torch.tensor\(\[ids\]\)"),
    "tokens as a list": (lambda m: residual_stream(m, [[1, 2]]), ValueError, "tensor"),
    "empty batch": (
        lambda m: patch_heads(m, _CLEAN[:0], _CORRUPTED[:0], _mean_last_logit), ValueError, "no tokens",
    ),
    "no time steps": (lambda m: logit_lens(m, _CLEAN[:, :0]), ValueError, "no tokens"),
    "position past the end": (
        lambda m: patch_residual(m, _CLEAN, _CORRUPTED, _mean_last_logit, [99]), ValueError, "position",
    ),
    "position before the start": (
        lambda m: patch_heads(m, _CLEAN, _CORRUPTED, _mean_last_logit, [-99]), ValueError, "position",
    ),
    "float position": (
        lambda m: patch_residual(m, _CLEAN, _CORRUPTED, _mean_last_logit, [1.5]), TypeError, "position",
    ),
    "no positions": (
        lambda m: patch_heads(m, _CLEAN, _CORRUPTED, _mean_last_logit, []), ValueError, "positions",
    ),
    "metric not a function": (lambda m: patch_residual(m, _CLEAN, _CORRUPTED, 3), TypeError, "metric"),
    "metric per row": (
        lambda m: patch_heads(m, _CLEAN, _CORRUPTED, lambda lg: lg[:, -1, 0]), ValueError, "one number",
    ),
    "shapes differ": (
        lambda m: patch_residual(m, _CLEAN, _CORRUPTED[:, :4], _mean_last_logit), ValueError, "same shape",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INTERVENTION_CALLS, ids=str)
def test_every_bad_intervention_argument_is_named(case: str) -> None:
    call, error, message = BAD_INTERVENTION_CALLS[case]
    with pytest.raises(error, match=message):
        call(_model())


def test_heads_may_be_rows_of_a_tensor() -> None:
    model, tokens = _model(), _tokens(T=6)
    with ablated_heads(model, torch.tensor([[0, 1], [1, 2]])), torch.no_grad():
        from_tensor = model(tokens).logits
    with ablated_heads(model, [(0, 1), (1, 2)]), torch.no_grad():
        assert torch.equal(from_tensor, model(tokens).logits)


def test_negative_positions_count_from_the_end() -> None:
    model = _model()
    last = patch_residual(model, _CLEAN, _CORRUPTED, _mean_last_logit, positions=[-1])
    assert torch.equal(last, patch_residual(model, _CLEAN, _CORRUPTED, _mean_last_logit, [5]))
