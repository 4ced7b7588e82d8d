"""Scoring text with a model: token and continuation log-probabilities, perplexity, zero-shot
classification and GPT-3's multiple-choice normalisations (gptlib.evaluation)."""

import math

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.evaluation import (
    METHODS,
    continuation_logprobs,
    perplexity,
    score_choices,
    token_logprobs,
    zero_shot_classify,
)

VOCAB = 29


def make(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=VOCAB)
    return GPT(GPTConfig.from_preset("gpt2", **{**config, **overrides})).eval()


def ids(length: int, seed: int = 1) -> list[int]:
    return torch.randint(VOCAB, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def encode(text: str) -> list[int]:
    """A toy tokenizer with tokens of two characters, so token and character counts differ."""
    return [sum(map(ord, text[i : i + 2])) % VOCAB for i in range(0, len(text), 2)]


def alone(model: GPT, context: list[int], continuation: list[int]) -> torch.Tensor:
    """log p of each continuation token, from one unpadded forward pass of this pair alone."""
    with torch.no_grad():
        logits = model(torch.tensor([context + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(context) - 1
    return torch.stack([logprobs[start + i, t] for i, t in enumerate(continuation)])


def test_token_logprobs_are_minus_the_cross_entropy_and_keep_the_graph():
    model = make()
    idx = torch.tensor([ids(12), ids(12, seed=2)])
    scored = token_logprobs(model, idx)
    assert scored.shape == (2, 11) and scored.dtype == torch.float32
    loss = model(idx[:, :-1], targets=idx[:, 1:]).loss
    assert torch.allclose(-scored.mean(), loss, atol=1e-6)
    scored.sum().backward()  # usable as a training objective
    assert model.tok_emb.weight.grad is not None


def test_continuations_scored_in_a_padded_batch_equal_each_pair_scored_alone():
    model = make(1)
    contexts = [ids(5), ids(1, seed=3), ids(9, seed=4)]
    continuations = [ids(3, seed=5), ids(6, seed=6), ids(1, seed=7)]
    out = continuation_logprobs(model, contexts, continuations, batch_size=2)
    assert out.logprobs.shape == (3, 6) and out.lengths.tolist() == [3, 6, 1]
    for row, (context, continuation) in enumerate(zip(contexts, continuations, strict=True)):
        n = len(continuation)
        assert torch.allclose(out.logprobs[row, :n], alone(model, context, continuation), atol=1e-5)
        assert (out.logprobs[row, n:] == 0).all()


def test_a_pair_longer_than_block_size_keeps_its_last_block_size_tokens():
    model = make(2)  # learned positions, block_size 16
    context, continuation = ids(20), ids(4, seed=8)
    out = continuation_logprobs(model, [context], [continuation])
    kept = (context + continuation)[-16:]
    assert torch.allclose(out.logprobs[0], alone(model, kept[:-4], continuation), atol=1e-5)
    rotary = make(2, position="rotary")  # no limit: the whole context is read
    out = continuation_logprobs(rotary, [context], [continuation])
    assert torch.allclose(out.logprobs[0], alone(rotary, context, continuation), atol=1e-5)


def test_perplexity_of_a_short_text_is_exp_of_the_loss_and_a_uniform_model_gives_the_vocab():
    model = make(3)
    text = ids(14, seed=9)
    idx = torch.tensor([text])
    with torch.no_grad():
        loss = model(idx[:, :-1], targets=idx[:, 1:]).loss.item()
    assert perplexity(model, text) == pytest.approx(math.exp(loss), rel=1e-5)
    uniform = make(3, tie_embeddings=False)
    torch.nn.init.zeros_(uniform.lm_head.weight)  # every logit 0: a uniform guess
    assert perplexity(uniform, ids(40)) == pytest.approx(VOCAB, rel=1e-5)


@pytest.mark.parametrize("stride", [None, 15, 8, 1])
def test_a_long_text_is_scored_once_per_token_with_the_promised_context(stride):
    model, text = make(4), ids(50, seed=10)
    window = model.config.block_size
    step = window - 1 if stride is None else stride
    total = 0.0
    for end in range(1, 50):  # token `end`, scored in the window its chunk falls in
        chunk_end = min(1 + step * ((end - 1) // step + 1), 50)
        first = max(0, chunk_end - window)
        assert end - first >= min(end, window - step)  # the context the docstring promises
        total += alone(model, text[first:end], [text[end]]).item()
    assert perplexity(model, text, stride=stride) == pytest.approx(math.exp(-total / 49), rel=1e-5)


def test_choice_scores_follow_each_normalisation():
    model = make(5, block_size=64)
    contexts = ["the cat sat on the", "a dog ran to the"]
    choices = [[" mat", " big red sofa", " roof"], [" park", " end of the road", " sea"]]
    scores = score_choices(model, encode, contexts, choices, answer_context="Answer:")
    for q, context in enumerate(contexts):
        for c, choice in enumerate(choices[q]):
            logprob = alone(model, encode(context), encode(choice)).sum().item()
            neutral = alone(model, encode("Answer:"), encode(choice)).sum().item()
            tokens, chars = len(encode(choice)), len(choice)
            expected = {"sum": logprob, "per_token": logprob / tokens,
                        "per_char": logprob / chars, "unconditional": logprob - neutral}  # fmt: skip
            for method in METHODS:
                got = scores.scores(method)[q, c].item()
                assert got == pytest.approx(expected[method], abs=1e-4), (method, q, c)
    for method in METHODS:
        assert torch.equal(scores.predict(method), scores.scores(method).argmax(1))


def test_normalisations_can_disagree_and_length_is_what_plain_likelihood_penalises():
    # A model that gives every token the same probability: plain likelihood prefers the shortest
    # choice, per-token normalisation ties every choice, and the unconditional one ties too.
    model = make(6, tie_embeddings=False, block_size=64)
    torch.nn.init.zeros_(model.lm_head.weight)
    scores = score_choices(model, encode, ["x"], [[" long answer", " no"]], answer_context="A:")
    assert scores.predict("sum").item() == 1  # the shorter choice
    assert torch.allclose(scores.scores("per_token")[0, 0], scores.scores("per_token")[0, 1])
    assert torch.allclose(scores.scores("unconditional"), torch.zeros(1, 2), atol=1e-5)


def test_zero_shot_classify_picks_the_likeliest_label():
    model = make(7, block_size=64)
    texts = ["one two three", "red green", "up down"]
    labels = [" yes", " no", " maybe"]
    predicted = zero_shot_classify(model, encode, texts, labels)
    expected = [
        max(range(3), key=lambda c: alone(model, encode(t), encode(labels[c])).sum().item())
        for t in texts
    ]
    assert predicted.tolist() == expected


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: token_logprobs(m, torch.tensor([[1]])), ValueError, "at least 2"),
        (lambda m: token_logprobs(m, torch.tensor([1, 2])), ValueError, "shape"),
        (lambda m: continuation_logprobs(m, [[1]], [[2], [3]]), ValueError, "one context per"),
        (lambda m: continuation_logprobs(m, [[]], [[2]]), ValueError, "context of pair 0 is empty"),
        (lambda m: continuation_logprobs(m, [[1]], [[]]), ValueError, "continuation of pair 0"),
        (lambda m: continuation_logprobs(m, [[1]], [[2] * 16]), ValueError, "block_size=16"),
        (lambda m: continuation_logprobs(m, ["ab"], [[2]]), TypeError, "list of token ids"),
        (lambda m: continuation_logprobs(m, [[1]], [[2]], batch_size=0), ValueError, "batch_size"),
        (lambda m: perplexity(m, [3]), ValueError, "at least 2"),
        (lambda m: perplexity(m, ids(20), stride=16), ValueError, "stride=16 is too large"),
        (lambda m: perplexity(m, ids(20), stride=0), ValueError, "stride"),
        (lambda m: perplexity(m, torch.ones(2, 5, dtype=torch.long)), ValueError, "1-D"),
        (lambda m: score_choices(m, encode, ["a"], [[" b"], [" c"]]), ValueError, "one list"),
        (
            lambda m: score_choices(m, encode, ["a", "b"], [[" b"], [" c", " d"]]),
            ValueError,
            "same number",
        ),  # fmt: skip
        (
            lambda m: score_choices(m, encode, ["a"], [[" b"]]).scores("mean"),
            ValueError,
            "unknown",
        ),  # fmt: skip
        (
            lambda m: score_choices(m, encode, ["a"], [[" b"]]).scores("unconditional"),
            ValueError,
            "answer_context",
        ),  # fmt: skip
        (lambda m: zero_shot_classify(m, encode, ["a"], " yes"), ValueError, "two label"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(call, error, message):
    with pytest.raises(error, match=message):
        call(make())
