"""Generation: the preallocated KV cache, left-padded batches, stop sequences, log-probabilities,
and the one argument check that every sampling entry point shares (issue 9, section 4)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlib import GPT, Generation, GPTConfig
from gptlib.attention import KVCache, LayerCache
from gptlib.generation import beam_search, cut_at_stop, left_pad
from gptlib.inference import generate_batched
from gptlib.sampling import check_sampling_args, filter_logits, sample_next
from gptlib.tokenizers import CharTokenizer

VOCAB = 61
TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=VOCAB)

# Every position scheme (rotary also partial and interleaved) and every layout; a window
# shorter than the prompts; GQA, MQA and MoE.
POSITIONS = {
    "learned": dict(position="learned"),
    "sinusoidal": dict(position="sinusoidal"),
    "rotary": dict(position="rotary"),
    "rotary-partial-interleaved": dict(
        position="rotary", rotary_fraction=0.5, rotary_pairing="interleaved"
    ),
    "alibi": dict(position="alibi"),
    "none": dict(position="none"),
}
LAYOUTS = {
    "dense": dict(attention_pattern=("dense",)),
    "local": dict(attention_pattern=("local",), window_size=5),
    "strided": dict(attention_pattern=("strided",), sparse_stride=3),
    "dense-then-local": dict(attention_pattern=("dense", "local"), window_size=4),
}
HEADS = {
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "moe": dict(mlp="moe", n_experts=4, n_experts_per_token=2, n_kv_head=2),
}


def make(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_preset("gpt2", **{**TINY, **overrides})).eval()


def tokens(batch: int = 2, length: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def ragged_prompts() -> list[list[int]]:
    lengths = (7, 2, 11, 4)  # longer and shorter than the local windows above
    flat = tokens(batch=1, length=sum(lengths), seed=3)[0].tolist()
    starts = np.cumsum((0, *lengths))
    return [flat[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


# ---------------------------------------------------------------------- the static cache
CASES = {
    f"{p}-{lay}": {**POSITIONS[p], **LAYOUTS[lay]}
    for p in POSITIONS
    for lay in LAYOUTS
    if lay != "dense-then-local" or p in ("learned", "alibi")
}
CASES.update({name: dict(position="rotary", **extra) for name, extra in HEADS.items()})


@pytest.mark.parametrize("name", CASES)
def test_greedy_generation_with_the_cache_equals_no_cache(name):
    model = make(**CASES[name])
    prompt = tokens(length=6)
    cached = model.generate(prompt, 20, temperature=0.0, use_cache=True)
    assert cached.shape == (2, 26)
    assert torch.equal(cached, model.generate(prompt, 20, temperature=0.0, use_cache=False))


@settings(max_examples=25)
@given(
    chunks=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    window=st.integers(1, 6),
    name=st.sampled_from(["learned", "rotary", "alibi"]),
)
def test_cache_fed_in_chunks_gives_the_logits_of_one_forward(chunks, window, name):
    # Chunks longer than the window exercise the rolling buffer's multi-token path.
    model = make(**POSITIONS[name], attention_pattern=("dense", "local"), window_size=window)
    idx = tokens(length=sum(chunks), seed=len(chunks))
    cache = KVCache(model.config.n_layer)
    pieces, start = [], 0
    with torch.no_grad():
        for n in chunks:
            pieces.append(model(idx[:, start : start + n], kv_cache=cache).logits)
            start += n
        full = model(idx).logits
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)
    assert cache.layers[1].held == min(window, sum(chunks))


def test_a_step_writes_into_the_preallocated_buffer_without_copying_it():
    model = make()
    cache = KVCache(model.config.n_layer, max_length=40)
    with torch.no_grad():
        model(tokens(length=10), kv_cache=cache)
        storage = cache.layers[0].k.untyped_storage().data_ptr()
        for t in range(5):
            model(tokens(length=1, seed=t), kv_cache=cache)
    layer = cache.layers[0]
    assert layer.slots == 40 and layer.k.shape == (2, 4, 15, 8)
    assert layer.k.untyped_storage().data_ptr() == storage  # the same buffer, written in place
    assert torch.equal(layer.positions, torch.arange(15))


def test_a_cache_without_max_length_grows_and_keeps_its_tokens():
    model = make(position="rotary")
    idx = tokens(batch=1, length=150)
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        pieces = [model(idx[:, :3], kv_cache=cache).logits]
        pieces += [model(idx[:, t : t + 1], kv_cache=cache).logits for t in range(3, 150)]
        full = model(idx).logits
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)
    assert cache.layers[0].slots >= 150 and cache.num_cached() == 2 * 150


def test_a_local_layer_keeps_a_rolling_window_of_the_last_tokens():
    cache = LayerCache()
    for start in range(0, 10, 2):
        k = torch.arange(start, start + 2, dtype=torch.float).view(1, 1, 2, 1).expand(1, 1, 2, 4)
        cache.update(k, k.clone(), window=3)
    assert cache.slots == 3 and cache.held == 3
    assert torch.equal(cache.positions, torch.tensor([7, 8, 9]))
    assert cache.k[0, 0, :, 0].tolist() == [7.0, 8.0, 9.0]  # oldest first, though slot 0 holds 9
    one = torch.full((1, 1, 1, 4), 10.0)
    keys, _ = cache.update(one, one, window=3)
    assert sorted(keys[0, 0, :, 0].tolist()) == [8.0, 9.0, 10.0]
    assert cache.key_positions().tolist() == keys[0, 0, :, 0].long().tolist()


def test_a_cache_refuses_another_batch_size_more_than_max_length_or_another_model():
    model = make()
    cache = KVCache(model.config.n_layer, max_length=12)
    with torch.no_grad():
        model(tokens(batch=2, length=10), kv_cache=cache)
        with pytest.raises(ValueError, match="batch of 2 sequence.*got a batch of 3"):
            model(tokens(batch=3, length=1), kv_cache=cache)
        with pytest.raises(ValueError, match="max_length=12.*has 10 and 3 more"):
            model(tokens(batch=2, length=3), kv_cache=cache)
        with pytest.raises(ValueError, match="kv_cache has 3 layers, the model 2"):
            model(tokens(length=1), kv_cache=KVCache(3))
    with pytest.raises(ValueError, match="max_length must be a positive integer or None"):
        KVCache(2, max_length=0)
    with pytest.raises(TypeError, match="n_layer must be a positive integer"):
        KVCache(2.0)


def test_generate_calls_the_model_once_per_new_token():
    # Chapter 14 counts the tokens each call processes with a forward hook.
    model, calls = make(), []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].size(1)))
    model.generate(tokens(batch=1, length=7), 5, temperature=0.0)
    handle.remove()
    assert calls == [7, 1, 1, 1, 1]


def test_a_large_head_gives_the_same_tokens_as_repeated_forward_passes():
    # 8192 x 128 = 2^20 numbers: generate multiplies by a transposed copy of the head.
    model = make(n_embd=128, vocab_size=8192, n_layer=1)
    idx = torch.randint(0, 8192, (1, 5), generator=torch.Generator().manual_seed(0))
    generated = model.generate(idx, 40, temperature=0.0)
    with torch.no_grad():
        for _ in range(40):
            idx = torch.cat([idx, model(idx).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, idx)
    assert model._transposed_head is None  # the copy is not kept after generate


# ---------------------------------------------------------------------- left-padded batches
RAGGED = {
    "learned": dict(position="learned"),
    "sinusoidal": dict(position="sinusoidal"),
    "rotary": dict(position="rotary"),
    "rotary-partial-interleaved": POSITIONS["rotary-partial-interleaved"],
    "alibi": dict(position="alibi"),
    "learned-local": dict(position="learned", **LAYOUTS["dense-then-local"]),
    "rotary-local-gqa": dict(position="rotary", n_kv_head=2, **LAYOUTS["local"]),
    "alibi-local": dict(position="alibi", **LAYOUTS["local"]),
    "learned-strided": dict(position="learned", **LAYOUTS["strided"]),
    "learned-past-block-size": dict(position="learned", block_size=16),
}


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("name", RAGGED)
def test_a_left_padded_batch_equals_each_prompt_generated_alone(name, use_cache):
    model = make(**RAGGED[name])
    prompts = ragged_prompts()
    idx, mask = left_pad(prompts, pad_token_id=5)
    batch = model.generate(idx, 12, temperature=0.0, attention_mask=mask, use_cache=use_cache)
    for row, prompt in zip(batch, prompts, strict=True):
        alone = model.generate(torch.tensor([prompt]), 12, temperature=0.0, use_cache=use_cache)
        assert row[idx.size(1) - len(prompt) :].tolist() == alone[0].tolist()


@pytest.mark.parametrize("name", ["learned", "rotary", "alibi", "rotary-local-gqa"])
def test_forward_with_an_attention_mask_gives_each_row_its_own_logits(name):
    model = make(**RAGGED[name])
    prompts = ragged_prompts()
    idx, mask = left_pad(prompts)
    with torch.no_grad():
        padded = model(idx, attention_mask=mask).logits
        for row, prompt in enumerate(prompts):
            alone = model(torch.tensor([prompt])).logits[0]
            torch.testing.assert_close(padded[row, -len(prompt) :], alone, rtol=0, atol=1e-5)
        assert torch.isfinite(padded).all()  # padding positions too: no NaN from empty rows


def test_a_padded_cache_continues_with_or_without_the_mask():
    model = make(position="rotary")
    idx, mask = left_pad(ragged_prompts())
    step = tokens(batch=4, length=1)
    with torch.no_grad():
        a, b = KVCache(2), KVCache(2)
        model(idx, kv_cache=a, attention_mask=mask)
        model(idx, kv_cache=b, attention_mask=mask)
        longer = torch.cat([mask, torch.ones(4, 1, dtype=mask.dtype)], dim=1)
        with_mask = model(step, kv_cache=a, attention_mask=longer).logits
        without = model(step, kv_cache=b).logits
        assert torch.equal(with_mask, without)
        assert a.layers[0].positions[1].tolist() == list(range(-9, 3))  # row 1: 9 pads, 3 tokens
        with pytest.raises(ValueError, match="differs from the padding"):
            model(step, kv_cache=a, attention_mask=torch.ones(4, 13, dtype=torch.long))


def test_left_pad_builds_ids_and_mask_and_generate_batched_strips_the_padding():
    idx, mask = left_pad([[3, 4, 5], [7]], pad_token_id=9)
    assert idx.tolist() == [[3, 4, 5], [9, 9, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    model = make()
    prompts = ragged_prompts()
    batched = generate_batched(model, prompts, 6, temperature=0.0)
    for row, prompt in zip(batched, prompts, strict=True):
        assert row == model.generate(torch.tensor([prompt]), 6, temperature=0.0)[0].tolist()
    assert generate_batched(model, [], 6) == []


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.tensor([[1, 0, 1], [1, 1, 1]]), "must be left padding"),
        (torch.tensor([[0, 0, 0], [1, 1, 1]]), "row 0 of attention_mask has no real token"),
        (torch.tensor([[0, 2, 1], [1, 1, 1]]), "only 0 .padding. and 1"),
        (torch.ones(2, 4, dtype=torch.long), r"shape \(2, 4\), expected \(2, 3\)"),
    ],
)
def test_a_bad_attention_mask_is_refused(mask, message):
    with pytest.raises(ValueError, match=message):
        make().generate(tokens(length=3), 2, attention_mask=mask)


def test_left_pad_refuses_empty_prompts():
    with pytest.raises(ValueError, match=r"sequences\[1\] is empty"):
        left_pad([[1], []])
    with pytest.raises(ValueError, match=r"sequences\[1\] is empty"):
        generate_batched(make(), [[1], []], 2)
    with pytest.raises(TypeError, match="encode it with a tokenizer"):
        left_pad(["abc"])


# ---------------------------------------------------------------------- stop sequences
def test_a_token_stop_ends_its_row_at_the_first_occurrence_and_pads_after_it():
    model = make()
    prompt = tokens(batch=1, length=4)
    greedy = model.generate(prompt, 12, temperature=0.0)[0, 4:].tolist()
    stop = greedy[5:7]
    first = next(i for i in range(1, 12) if greedy[i - 1 : i + 1] == stop)  # may precede 5
    out = model.generate(prompt, 12, temperature=0.0, stop=[stop])
    assert out[0, 4:].tolist() == greedy[: first + 1]  # the only row: generation ends there
    result = model.generate(prompt, 12, temperature=0.0, stop=[stop], return_logprobs=True)
    assert result.new_lengths.tolist() == [first + 1]


def test_stops_in_a_batch_pad_finished_rows_and_each_row_equals_itself_alone():
    model = make(position="rotary")
    prompts = ragged_prompts()
    idx, mask = left_pad(prompts)
    alone = [model.generate(torch.tensor([p]), 10, temperature=0.0)[0, len(p) :] for p in prompts]
    stop = alone[0][2:4].tolist()  # ends row 0 after 4 tokens, maybe others too
    result = model.generate(
        idx, 10, temperature=0.0, attention_mask=mask, stop=[stop], pad_token_id=0,
        return_logprobs=True,
    )  # fmt: skip
    for row, prompt in enumerate(prompts):
        one = model.generate(torch.tensor([prompt]), 10, temperature=0.0, stop=[stop])
        n = int(result.new_lengths[row])
        assert (
            result.ids[row, idx.size(1) : idx.size(1) + n].tolist()
            == one[0, len(prompt) :].tolist()
        )
        assert (result.ids[row, idx.size(1) + n :] == 0).all()
        assert (result.logprobs[row, n:] == 0).all()
    assert result.new_lengths[0] <= 4


def test_a_stop_string_needs_a_tokenizer_and_is_found_across_tokens_but_not_in_the_prompt():
    tokenizer = CharTokenizer.from_text("abcdefghij klmnopqrstuvwxyz\n()=:")
    model = make(vocab_size=tokenizer.vocab_size)
    prompt = torch.tensor([tokenizer.encode("def f")])
    free = tokenizer.decode(model.generate(prompt, 30, temperature=0.0)[0, 5:].tolist())
    stop = free[6:9]  # three characters: the stop spans three tokens
    expected = free[: free.index(stop) + len(stop)]
    out = model.generate(prompt, 30, temperature=0.0, stop=[stop], tokenizer=tokenizer)
    assert tokenizer.decode(out[0, 5:].tolist()) == expected
    # "f" ends the prompt; only the continuation counts.
    out = model.generate(prompt, 8, temperature=0.0, stop=["f"], tokenizer=tokenizer)
    assert out.size(1) == 5 + (free.index("f") + 1 if "f" in free[:8] else 8)
    with pytest.raises(ValueError, match="need tokenizer="):
        model.generate(prompt, 3, stop=["\n"])


@pytest.mark.parametrize(
    "stop, error, message",
    [
        ([1, 2], TypeError, r"wrap one token-id sequence in a list: stop=\[\[1, 2\]\]"),
        ([[]], ValueError, r"stop\[0\] is an empty sequence"),
        ([[VOCAB]], ValueError, rf"stop\[0\] holds token id {VOCAB}"),
        ([""], ValueError, "empty string"),
        (5, TypeError, "stop must be a list"),
    ],
)
def test_bad_stop_sequences_are_refused(stop, error, message):
    with pytest.raises(error, match=message):
        make().generate(tokens(batch=1, length=3), 2, stop=stop)


def test_cut_at_stop_keeps_the_text_before_the_first_stop():
    text = "    return x\n\ndef g():\n    pass\nprint(1)"
    assert cut_at_stop(text, ["\nprint", "\ndef"]) == "    return x\n"
    assert cut_at_stop(text, "\nclass") == text
    with pytest.raises(TypeError, match="non-empty string"):
        cut_at_stop(text, [""])


# ---------------------------------------------------------------------- log-probabilities
@pytest.mark.parametrize(
    "sampling",
    [dict(temperature=0.0), dict(temperature=1.3, top_k=5, seed=0), dict(top_p=0.8, seed=1)],
    ids=["greedy", "temperature-top-k", "top-p"],
)
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_logprobs_are_the_models_own_log_probabilities_of_the_chosen_tokens(sampling, use_cache):
    model = make(position="alibi", attention_pattern=("local",), window_size=4)
    prompt = tokens(length=5)
    result = model.generate(prompt, 12, use_cache=use_cache, return_logprobs=True, **sampling)
    assert isinstance(result, Generation)
    assert result.logprobs.shape == (2, 12) and result.logprobs.dtype == torch.float32
    with torch.no_grad():
        logits = model(result.ids).logits[:, 4:-1]  # the logits that predicted each new token
    expected = F.log_softmax(logits.float(), dim=-1).gather(-1, result.ids[:, 5:, None])[..., 0]
    torch.testing.assert_close(result.logprobs, expected, rtol=0, atol=1e-5)
    assert result.new_lengths.tolist() == [12, 12]
    again = model.generate(prompt, 12, use_cache=use_cache, **sampling)
    assert torch.equal(again, result.ids)  # return_logprobs changes only what is returned


def test_logprobs_of_a_padded_batch_and_after_eos():
    model = make(position="rotary")
    prompts = ragged_prompts()
    idx, mask = left_pad(prompts)
    eos = int(model.generate(torch.tensor([prompts[1]]), 3, temperature=0.0)[0, -1])
    result = model.generate(
        idx, 8, temperature=0.0, attention_mask=mask, eos_token_id=eos, return_logprobs=True
    )
    for row, prompt in enumerate(prompts):
        n = int(result.new_lengths[row])
        sequence = result.ids[row : row + 1, idx.size(1) - len(prompt) : idx.size(1) + n]
        with torch.no_grad():
            logits = model(sequence).logits[0, len(prompt) - 1 : -1]
        expected = F.log_softmax(logits, dim=-1).gather(-1, sequence[0, len(prompt) :, None])
        torch.testing.assert_close(result.logprobs[row, :n], expected[:, 0], rtol=0, atol=1e-5)
        assert (result.logprobs[row, n:] == 0).all() and (
            result.ids[row, idx.size(1) + n :] == eos
        ).all()
    assert result.new_lengths[1] <= 3


# ---------------------------------------------------------------------- argument checks
def test_an_empty_prompt_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"the prompt is empty: idx has shape \(1, 0\)"):
        make().generate(torch.zeros(1, 0, dtype=torch.long), 3)


def test_max_new_tokens_zero_returns_the_prompt_and_numpy_integers_count():
    model, prompt = make(), tokens(length=3)
    same = model.generate(prompt, 0)
    assert torch.equal(same, prompt) and same is not prompt
    assert model.generate(prompt, np.int64(4), temperature=0.0).shape == (2, 7)
    assert model.generate(prompt, 2, top_k=np.int32(3), seed=np.int64(1)).shape == (2, 5)
    assert sample_next(torch.randn(2, 8), top_k=np.int64(2), temperature=np.float32(0.5)).shape == (
        2,
        1,
    )


BAD = [
    (dict(max_new_tokens=-3), ValueError, "max_new_tokens must be an integer >= 0.*got -3"),
    (dict(max_new_tokens=2.5), TypeError, r"max_new_tokens must be an integer >= 0.*2\.5"),
    (dict(max_new_tokens=True), TypeError, "max_new_tokens must be .*bool"),
    (dict(temperature=float("nan")), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature=float("inf")), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature=-1.0), ValueError, "temperature must be a finite number >= 0.*-1"),
    (dict(temperature="1"), TypeError, "temperature must be a finite number"),
    (dict(top_k=0), ValueError, "top_k must be a positive integer or None, got 0"),
    (dict(top_k=True), TypeError, "top_k must be a positive integer or None, got the bool"),
    (dict(top_k=2.0), TypeError, r"top_k must be a positive integer or None, got 2\.0"),
    (dict(top_p=0.0), ValueError, r"top_p must be a number in \(0, 1\] or None, got 0\.0"),
    (dict(top_p=1.5), ValueError, r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=float("nan")), ValueError, r"top_p must be a number in \(0, 1\]"),
    (dict(eos_token_id=VOCAB), ValueError, rf"eos_token_id={VOCAB} is outside.*\[0, {VOCAB}\)"),
    (dict(eos_token_id=-1), ValueError, rf"eos_token_id must be a token id in \[0, {VOCAB}\)"),
    (dict(pad_token_id=VOCAB + 5), ValueError, "pad_token_id=66 is outside"),
    (dict(seed="7"), TypeError, "seed must be an integer or None"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "seed or generator"),
    (dict(seed=2**70), ValueError, r"seed must be an integer below 2\*\*64 or None, got"),
    (dict(generator=5), TypeError, "generator must be a torch.Generator or None, got int"),
    (dict(use_cache="no"), TypeError, "use_cache='no' is a str, but use_cache must be True or"),
    (dict(return_logprobs="no"), TypeError, "return_logprobs='no' is a str"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD, ids=[str(b[0]) for b in BAD])
def test_generate_refuses_each_bad_argument_by_name(kwargs, error, message):
    kwargs = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(error, match=message):
        make().generate(tokens(batch=1, length=3), **kwargs)


@pytest.mark.parametrize("kwargs, error, message", BAD[3:13], ids=[str(b[0]) for b in BAD[3:13]])
def test_every_sampling_entry_point_shares_the_check(kwargs, error, message):
    logits = torch.randn(3, 10)
    with pytest.raises(error, match=message):
        sample_next(logits, **kwargs)
    with pytest.raises(error, match=message):
        generate_batched(make(), [[1, 2], [3]], 2, **kwargs)
    with pytest.raises(error, match=message):
        check_sampling_args(**kwargs)
    if "top_k" in kwargs or "top_p" in kwargs:
        with pytest.raises(error, match=message):
            filter_logits(logits, **kwargs)


def test_generate_batched_checks_max_new_tokens_even_without_prompts():
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        generate_batched(make(), [], -1)
    with pytest.raises(TypeError, match="generate_batched sets attention_mask itself"):
        generate_batched(make(), [[1]], 2, attention_mask=torch.ones(1, 1))


def test_temperature_zero_is_greedy_whatever_top_k_and_top_p_say():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9]])
    assert sample_next(logits, temperature=0, top_k=1, top_p=0.1).item() == 1
    assert math.isinf(filter_logits(logits, top_k=1)[0, 0].item())


# ---------------------------------------------------------------------- beam search
def _exhaustive(model: GPT, prompt: torch.Tensor, steps: int, eos: int | None, penalty: float):
    """Best (score, continuation) over every continuation: brute force with one forward each."""
    best = (float("-inf"), None)
    frontier = [[]]  # unfinished continuations, extended by every token at each step
    for length in range(1, steps + 1):
        grown = []
        for prefix in frontier:
            for token in range(model.config.vocab_size):
                if token == eos or length == steps:  # a complete hypothesis
                    total = _logprob(model, prompt, prefix + [token])
                    best = max(best, (total / length**penalty, prefix + [token]))
                if token != eos:
                    grown.append(prefix + [token])
        frontier = grown
    return best


def _logprob(model: GPT, prompt: torch.Tensor, continuation: list[int]) -> float:
    ids = torch.tensor([prompt.tolist() + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    T = prompt.numel()
    return sum(float(logprobs[T - 1 + i, t]) for i, t in enumerate(continuation))


@pytest.mark.parametrize("eos, penalty", [(None, 1.0), (0, 1.0), (0, 0.0), (0, 2.0)])
def test_beam_search_with_enough_beams_finds_what_exhaustive_search_finds(eos, penalty):
    # A 4-token vocabulary and 3 new tokens: at most 4**2 beams are ever alive, so 16 beams
    # keep everything and beam search must find the exhaustive optimum, score included.
    for seed in range(2):
        model = make(seed, vocab_size=4, n_embd=16, n_head=2)
        prompt = torch.tensor([1, 3, 2])
        ids, scores = beam_search(model, prompt[None], 3, num_beams=16, length_penalty=penalty,
                                  eos_token_id=eos, return_scores=True)  # fmt: skip
        best_score, best = _exhaustive(model, prompt, 3, eos, penalty)
        got = ids[0, 3 : 3 + len(best)].tolist()
        assert got == best, f"seed {seed}: beam search {got}, exhaustive {best}"
        assert scores[0].item() == pytest.approx(best_score, abs=1e-5)
        assert ids[0, 3 + len(best) :].tolist() == [eos] * (3 - len(best))  # padded with eos


def test_one_beam_is_greedy_and_the_score_is_the_mean_log_probability_returned():
    model, prompt = make(2), tokens(batch=2, length=5, seed=4)
    greedy = model.generate(prompt, 12, temperature=0.0)
    assert torch.equal(beam_search(model, prompt, 12, num_beams=1), greedy)
    for beams in (1, 4):
        ids, scores = beam_search(model, prompt, 12, num_beams=beams, return_scores=True)
        for row in range(2):
            mean = _logprob(model, prompt[row], ids[row, 5:].tolist()) / 12
            assert scores[row].item() == pytest.approx(mean, abs=1e-4)


@pytest.mark.parametrize("name", ["learned-dense", "rotary-local", "alibi-strided", "moe"])
def test_beam_search_with_the_cache_equals_no_cache(name):
    model, prompt = make(5, **CASES[name]), tokens(batch=2, length=6, seed=6)
    for eos in (None, 7):
        kwargs = dict(num_beams=3, eos_token_id=eos, return_scores=True)
        cached, cached_scores = beam_search(model, prompt, 8, use_cache=True, **kwargs)
        plain, plain_scores = beam_search(model, prompt, 8, use_cache=False, **kwargs)
        assert torch.equal(cached, plain)
        assert torch.allclose(cached_scores, plain_scores, atol=1e-5)


def test_beam_search_slides_past_block_size_with_learned_positions():
    model = make(1, block_size=8)
    ids = beam_search(model, tokens(batch=1, length=6), 10, num_beams=2)
    assert ids.shape == (1, 16)


def test_kv_cache_reorder_moves_rows_with_their_beams():
    model, prompt = make(3), tokens(batch=2, length=5, seed=8)
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(prompt, kv_cache=cache)
        cache.reorder(torch.tensor([1, 1, 0]))
        step = torch.tensor([[4], [9], [2]])
        logits = model(step, kv_cache=cache).logits[:, -1]
        expected = model(torch.cat([prompt[[1, 1, 0]], step], dim=1)).logits[:, -1]
    assert torch.allclose(logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="row indices in"):
        cache.reorder(torch.tensor([3]))
    with pytest.raises(ValueError, match="empty"):
        KVCache(2).reorder(torch.tensor([0]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_beams=0), ValueError, "num_beams"),
        (dict(num_beams=2.0), TypeError, "num_beams"),
        (dict(length_penalty="long"), TypeError, "length_penalty"),
        (dict(length_penalty=float("nan")), ValueError, "length_penalty"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
        (dict(eos_token_id=VOCAB), ValueError, "eos_token_id"),
    ],
)
def test_beam_search_refuses_each_bad_argument_by_name(kwargs, error, message):
    arguments = {**dict(max_new_tokens=3, num_beams=2), **kwargs}
    with pytest.raises(error, match=message):
        beam_search(make(), tokens(), **arguments)


def test_sampling_refuses_logits_it_cannot_draw_from_by_name():
    logits = torch.randn(2, 10)
    with pytest.raises(TypeError, match=r"logits must be \(B, vocab_size\).*logits\[:, -1\]"):
        sample_next(torch.randn(2, 3, 10))  # a model's whole output
    with pytest.raises(TypeError, match="logits must be a float tensor.*got ndarray"):
        sample_next(logits.numpy())
    with pytest.raises(TypeError, match="logits must be a float tensor.*got list"):
        filter_logits([[1.0, 2.0]], top_k=1)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        sample_next(logits, generator=3)
    nan = torch.full((1, 10), float("nan"))
    for temperature in (0.0, 1.0):  # greedy silently picked token 0; sampling failed in torch
        with pytest.raises(ValueError, match="the logits hold NaN.*weights .* not finite"):
            sample_next(nan, temperature=temperature)
    with pytest.raises(ValueError, match=r"hold NaN or \+inf"):
        sample_next(torch.tensor([[0.0, float("inf")]]))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_model_with_nan_weights_is_named_instead_of_generating_token_0(temperature):
    model = make()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.train()
    with pytest.raises(ValueError, match="the logits hold NaN"):
        model.generate(tokens(batch=1, length=3), 3, temperature=temperature, seed=0)
    assert model.training  # the mode is restored after the error


def test_a_large_max_new_tokens_reserves_memory_only_for_what_is_generated(monkeypatch):
    import gptlib.generation as generation

    model, prompt = make(position="rotary"), tokens(batch=2, length=3)
    whole = model.generate(prompt, 30, temperature=0, return_logprobs=True)
    monkeypatch.setattr(generation, "PREALLOCATED", 4)  # the buffers grow four times
    for use_cache in (True, False):
        grown = model.generate(prompt, 30, temperature=0, return_logprobs=True, use_cache=use_cache)
        assert torch.equal(grown.ids, whole.ids) and not grown.ids.is_inference()
        torch.testing.assert_close(grown.logprobs, whole.logprobs)
    monkeypatch.undo()
    # 10**12 new tokens would have preallocated terabytes (the process was killed); with an
    # end-of-text token that comes at once, only what is generated is reserved
    first = int(whole.ids[0, 3])
    out = model.generate(prompt[:1], 10**12, temperature=0, eos_token_id=first)
    assert out.tolist() == [[*prompt[0].tolist(), first]]


def test_cut_at_stop_names_what_is_not_text():
    with pytest.raises(TypeError, match="cut_at_stop takes a str, got NoneType"):
        cut_at_stop(None, "\n")
    with pytest.raises(TypeError, match="cut_at_stop takes a str, got bytes"):
        cut_at_stop(b"abc", "b")
    with pytest.raises(TypeError, match="stop must be a non-empty string or a list of them"):
        cut_at_stop("abc", None)
