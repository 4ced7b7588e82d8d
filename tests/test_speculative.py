"""Speculative decoding: its output distribution is the target's, greedy equals target greedy, the
KV caches roll back, the formulas match Leviathan et al. 2023, and bad settings are refused."""

import math

import pytest
import torch

import gptlib.speculative as speculative
from gptlib import GPT, GPTConfig
from gptlib.attention import KVCache
from gptlib.sampling import filter_logits
from gptlib.speculative import (
    expected_speedup,
    expected_tokens_per_pass,
    modified_rejection_sampling,
    speculative_generate,
)

VOCAB = 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on one thread: on a busy 2-core machine two threads make them 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    settings = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=11)
    settings.update(overrides)
    return GPT(GPTConfig.from_preset("gpt2", **settings)).eval()


def peaked_gpt(seed: int, **overrides) -> GPT:
    """A one-layer model over 6 tokens whose next-token distributions are far from uniform.

    At initialisation logits are near zero and every model predicts almost uniformly; a head
    20 times larger makes the target and the draft confident, and (with these seeds) different.
    """
    settings = dict(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=VOCAB,
                    tie_embeddings=False)  # fmt: skip
    model = tiny_gpt(seed, **{**settings, **overrides})
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


def exact_distribution(model: GPT, prompt: list[int], n: int, temperature: float, top_k):
    """P(x_1..x_n | prompt) under model.generate's sampling, by enumerating every prefix: (V^n,)."""
    probs, prefixes = torch.ones(1), [[]]
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + p for p in prefixes])).logits[:, -1]
        step = torch.softmax(filter_logits(logits / temperature, top_k), dim=-1)
        probs = (probs[:, None] * step).reshape(-1)
        prefixes = [p + [x] for p in prefixes for x in range(VOCAB)]
    return probs


def chi_square(counts: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic, cells expected below 5 pooled into one; and its 0.1% critical value.

    The critical value of chi-square with df degrees of freedom at p = 0.001 comes from the
    Wilson-Hilferty approximation (z = 3.09), accurate to about 1% for df >= 10.
    """
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    expected = torch.cat([expected[big], expected[~big].sum()[None]])
    statistic = float(((observed - expected) ** 2 / expected).sum())
    df = len(observed) - 1
    critical = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    return statistic, critical


def sample_counts(n_samples: int, temperature: float, top_k) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the 6^3 continuations of 3 tokens from n_samples seeds, and their exact probs."""
    target, draft = peaked_gpt(0), peaked_gpt(11)
    prompt = [2]
    counts = torch.zeros(VOCAB**3)
    for seed in range(n_samples):
        # k=2 over 3 tokens: rounds of two guesses, one guess, or none, every path of the rule
        out, _ = speculative_generate(target, draft, torch.tensor([prompt]), 3, k=2,
                                      temperature=temperature, top_k=top_k, seed=seed)  # fmt: skip
        a, b, c = out[0, 1:].tolist()
        counts[(a * VOCAB + b) * VOCAB + c] += 1
    return counts, exact_distribution(target, prompt, 3, temperature, top_k)


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.8, 4)])
def test_speculative_sampling_has_the_target_distribution(temperature, top_k) -> None:
    # 800 continuations of 3 tokens (800 seeds) against the target's exact distribution by
    # enumeration (Pearson's chi-square at p = 0.001, cells pooled below 5 expected; statistic
    # about 38 against 69 and 24 against 54 here). The draft and the target disagree a lot
    # (beta = sum min(p, q) is 0.36 on the first token), so rejections are common.
    counts, exact = sample_counts(800, temperature, top_k)
    statistic, critical = chi_square(counts, exact * counts.sum())
    assert statistic < critical, (statistic, critical)


def test_resampling_from_p_after_a_rejection_is_detectably_biased(monkeypatch) -> None:
    # The naive rule "accept with min(1, p/q), otherwise draw from p" gives token x the
    # probability min(p, q)(x) + (1 - beta) p(x) instead of p(x). The same test with the same
    # 800 seeds rejects it (statistic about 183 against a critical value of 69): the test
    # above has the power to tell the two rules apart.
    monkeypatch.setattr(speculative, "_residual", lambda p, q: p)
    counts, exact = sample_counts(800, 1.0, None)
    statistic, critical = chi_square(counts, exact * counts.sum())
    assert statistic > critical, (statistic, critical)


def test_modified_rejection_sampling_draws_from_p_for_any_q() -> None:
    # One step on fixed distributions, 200,000 independent rounds at once: the first token's
    # frequencies match p within sampling noise (TV about 0.002); the naive rule is off by
    # its exact bias, half the L1 distance between min(p, q) + (1 - beta) p and p.
    p1 = torch.tensor([0.05, 0.40, 0.05, 0.30, 0.10, 0.10])
    q1 = torch.tensor([0.50, 0.05, 0.30, 0.05, 0.05, 0.05])
    p2 = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.1, 0.1])  # after the guess (bonus-token row)
    rounds = 200_000
    generator = torch.Generator().manual_seed(0)
    guesses = torch.multinomial(q1, rounds, replacement=True, generator=generator)[:, None]
    p = torch.stack([p1, p2]).expand(rounds, 2, VOCAB)
    q = q1.expand(rounds, 1, VOCAB)
    n, token = modified_rejection_sampling(p, q, guesses, generator)
    first = torch.where(n == 1, guesses[:, 0], token)
    freq = torch.bincount(first, minlength=VOCAB).float() / rounds
    assert 0.5 * float((freq - p1).abs().sum()) < 0.006
    beta = float(torch.minimum(p1, q1).sum())
    assert abs(float((n == 1).float().mean()) - beta) < 0.005  # acceptance = sum min(p, q)
    naive = torch.minimum(p1, q1) + (1 - beta) * p1
    assert 0.5 * float((naive - p1).abs().sum()) > 0.1  # 0.11, 50x the sampling noise


def test_modified_rejection_sampling_checks_shapes() -> None:
    p, q = torch.full((3, VOCAB), 1 / VOCAB), torch.full((2, VOCAB), 1 / VOCAB)
    with pytest.raises(ValueError, match=r"\(\.\.\., k \+ 1, V\)"):
        modified_rejection_sampling(p, p, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="guesses"):
        modified_rejection_sampling(p, q, torch.zeros(3, dtype=torch.long))
    n, token = modified_rejection_sampling(p[:1], q[:0], torch.zeros(0, dtype=torch.long))
    assert int(n) == 0 and 0 <= int(token) < VOCAB  # no guesses: one token from p


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("preset", ["learned", "rotary", "local"])
def test_greedy_speculative_equals_target_greedy(k: int, preset: str) -> None:
    settings = {"learned": {}, "rotary": {"position": "rotary"},
                "local": {"position": "rotary", "attention_pattern": ["local", "dense"],
                          "window_size": 6}}[preset]  # fmt: skip
    target = tiny_gpt(0, **settings)
    draft = tiny_gpt(1, n_layer=1, **{**settings, "attention_pattern": ["dense"]})
    idx = torch.tensor([[1, 2, 3, 4, 5]])
    # 40 new tokens run past block_size=24 (learned positions slide their window) and past the
    # local window (its rolling buffer cannot be cropped: that model runs without a cache).
    out, stats = speculative_generate(target, draft, idx, 40, k=k, temperature=0.0)
    assert torch.equal(out, target.generate(idx, 40, temperature=0.0))
    assert stats.new_tokens == 40 == sum(stats.accepted_per_round) + stats.rounds
    assert stats.accepted <= stats.checked <= stats.proposed
    assert stats.target_calls_saved == 40 - stats.target_calls
    assert stats.alpha == stats.acceptance_rate  # greedy: beta is 1 or 0


def test_the_target_as_its_own_draft_accepts_everything() -> None:
    target = tiny_gpt(0, position="rotary")
    idx = torch.tensor([[3, 1, 4]])
    for temperature in (0.0, 1.0):
        out, stats = speculative_generate(target, target, idx, 11, k=4, temperature=temperature,
                                          seed=0)  # fmt: skip
        assert stats.acceptance_rate == 1.0 and abs(stats.alpha - 1.0) < 1e-5
        assert stats.target_calls == 3  # 5 + 5 + 1 tokens
    assert torch.equal(out[:, :3], idx)


def test_sampling_is_reproducible_and_the_cache_changes_nothing() -> None:
    target = peaked_gpt(0, position="rotary", block_size=24)
    draft = peaked_gpt(11, position="rotary", block_size=24)
    idx = torch.tensor([[1, 2, 3]])
    for seed in range(5):
        cached, stats = speculative_generate(target, draft, idx, 15, k=3, seed=seed)
        plain, _ = speculative_generate(target, draft, idx, 15, k=3, seed=seed, use_cache=False)
        generator = torch.Generator().manual_seed(seed)
        again, _ = speculative_generate(target, draft, idx, 15, k=3, generator=generator)
        assert torch.equal(cached, plain) and torch.equal(cached, again)
        assert stats.rejected > 0  # the caches were cropped back
    assert not torch.equal(
        speculative_generate(target, draft, idx, 15, seed=0)[0],
        speculative_generate(target, draft, idx, 15, seed=1)[0],
    )
    assert not target.training and not draft.training


def test_top_k_one_is_greedy() -> None:
    target, draft = tiny_gpt(0, position="rotary"), tiny_gpt(1, n_layer=1, position="rotary")
    idx = torch.tensor([[7, 1]])
    out, _ = speculative_generate(target, draft, idx, 12, k=3, top_k=1, seed=3)
    assert torch.equal(out, target.generate(idx, 12, temperature=0.0))


def test_speculative_errors() -> None:
    target = tiny_gpt()
    one = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"shape \(1, T\)"):
        speculative_generate(target, target, torch.ones(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="prompt is empty"):
        speculative_generate(target, target, torch.ones(1, 0, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(target, tiny_gpt(vocab_size=12), one, 4)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        speculative_generate(target, target, one, 4, k=0)
    with pytest.raises(TypeError, match="k must be"):
        speculative_generate(target, target, one, 4, k=2.5)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        speculative_generate(target, target, one, -1)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(target, target, one, 4, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        speculative_generate(target, target, one, 4, top_p=1.5)
    with pytest.raises(ValueError, match="seed or generator"):
        speculative_generate(target, target, one, 4, seed=0, generator=torch.Generator())
    out, stats = speculative_generate(target, target, one, 0)
    assert out.shape == (1, 3) and stats.target_calls == 0 and stats.rounds == 0


def test_expected_tokens_and_speedup_reproduce_leviathan_tables() -> None:
    # Leviathan et al. 2023, Table 1 (speed for c = 0) and Table 4 (T5-small, c = 0.02).
    for alpha, k, speed in [(0.6, 2, 1.96), (0.7, 3, 2.53), (0.8, 2, 2.44), (0.8, 5, 3.69),
                            (0.9, 2, 2.71), (0.9, 10, 6.86)]:  # fmt: skip
        assert abs(expected_speedup(alpha, k, 0.0) - speed) < 0.006
    assert abs(expected_speedup(0.75, 7, 0.02) - 3.2) < 0.05
    assert expected_tokens_per_pass(1.0, 4) == 5.0 and expected_tokens_per_pass(0.0, 4) == 1.0
    assert abs(expected_tokens_per_pass(0.5, 2) - 1.75) < 1e-12  # 1 + 0.5 + 0.25
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_pass(1.5, 2)
    with pytest.raises(ValueError, match="c "):
        expected_speedup(0.5, 2, -0.1)


def test_kv_cache_crop_equals_feeding_fewer_tokens() -> None:
    model = tiny_gpt(0, position="rotary")
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    cache = KVCache(model.config.n_layer, max_length=10)
    with torch.no_grad():
        model(seq, kv_cache=cache)
        cache.crop(4)
        assert cache.length == 4 and cache.layers[0].k.size(2) == 4
        cropped = model(seq[:, 4:6], kv_cache=cache).logits
        fresh = model(seq[:, :6]).logits[:, 4:6]
    assert torch.allclose(cropped, fresh, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be cropped to 9"):
        cache.crop(9)


def test_kv_cache_refuses_to_crop_a_wrapped_rolling_buffer() -> None:
    model = tiny_gpt(0, position="rotary", attention_pattern=["local"], window_size=4)
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
        cache.crop(2)  # not wrapped yet: fine
        model(torch.tensor([[3, 4, 5, 6]]), kv_cache=cache)  # 6 tokens through a window of 4
    with pytest.raises(ValueError, match="rolling buffer"):
        cache.crop(5)


_PROMPT = torch.tensor([[1, 2, 3]])
# (call, error, what the message names): before, k=2.5 guessed 2.5 tokens until generate
# refused them under the name max_new_tokens, and a None model was an AttributeError.
BAD_SPECULATIVE_CALLS = {
    "prompt as a list": (lambda t, d: speculative_generate(t, d, [[1, 2]], 3), TypeError, "idx"),
    "fractional k": (lambda t, d: speculative_generate(t, d, _PROMPT, 3, k=2.5), TypeError, "k must"),
    "bool k": (lambda t, d: speculative_generate(t, d, _PROMPT, 3, k=True), TypeError, "k must"),
    "fractional max_new_tokens": (
        lambda t, d: speculative_generate(t, d, _PROMPT, 2.5), TypeError, "got 2.5",
    ),
    "no draft": (lambda t, d: speculative_generate(t, None, _PROMPT, 3), TypeError, "draft"),
    "no target": (lambda t, d: speculative_generate(None, d, _PROMPT, 3), TypeError, "target"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_SPECULATIVE_CALLS, ids=str)
def test_every_bad_speculative_argument_is_named(case: str) -> None:
    call, error, message = BAD_SPECULATIVE_CALLS[case]
    with pytest.raises(error, match=message):
        call(tiny_gpt(), tiny_gpt(seed=1))
