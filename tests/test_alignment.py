"""Response log-probabilities, SFT batches, the reward model and its pairwise loss, the command."""

import json
import math
from pathlib import Path

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.alignment import (
    Comparisons,
    SFTData,
    generate_responses,
    main,
    normalise_scores,
    pairwise_accuracy,
    pairwise_loss,
    reward_model,
    sampled_kl,
    sequence_logprobs,
    sequence_scores,
    token_logprobs,
    train_reward_model,
)
from gptlib.finetune import SequenceClassifier

EOS = 7
BASE = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "bpe_stories"


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=8, dropout=0.0
    )
    return GPT(config).eval()


def test_token_logprobs_match_log_softmax() -> None:
    model = tiny_gpt()
    idx = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    logits = model(idx).logits
    expected = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, idx[:, 1:, None])[..., 0]
    torch.testing.assert_close(token_logprobs(model, idx), expected)


def test_sequence_logprobs_count_only_the_response() -> None:
    model = tiny_gpt()
    idx = torch.tensor([[1, 2, 3, 4, EOS, EOS], [1, 2, 5, EOS, EOS, EOS]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    per_token = token_logprobs(model, idx)
    got = sequence_logprobs(model, idx, mask)
    torch.testing.assert_close(got, torch.stack([per_token[0, 1:4].sum(), per_token[1, 1:3].sum()]))
    # the padding after a response changes nothing: the same row alone, unpadded
    alone = sequence_logprobs(model, idx[1:, :4], mask[1:, :4])
    torch.testing.assert_close(got[1:], alone)
    model.train()
    sequence_logprobs(model, idx, mask).sum().backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0


def test_sequence_logprobs_errors() -> None:
    model = tiny_gpt()
    idx = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="first token"):
        sequence_logprobs(model, idx, torch.tensor([[1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape"):
        sequence_logprobs(model, idx, torch.tensor([[0, 1]], dtype=torch.bool))


def test_generate_responses_groups_prompts_and_stops_at_eos() -> None:
    model = tiny_gpt()
    prompts = [[1, 2, 3], [4], [2, 2, 2], [5, 6]]
    rollout = generate_responses(model, prompts, max_new_tokens=6, eos_id=EOS, temperature=0.0)
    for row, prompt in enumerate(prompts):
        alone = model.generate(torch.tensor([prompt]), 6, temperature=0.0)[0, len(prompt) :]
        stop = (alone == EOS).nonzero()
        expected = alone[: int(stop[0]) + 1] if len(stop) else alone
        mask = rollout.response_mask[row]
        assert rollout.idx[row, : len(prompt)].tolist() == prompt
        assert rollout.idx[row][mask].tolist() == expected.tolist()
        assert not mask[: len(prompt)].any()
        assert int(rollout.last[row]) == len(prompt) + len(expected) - 1
    assert rollout.prompt_lengths.tolist() == [3, 1, 3, 2]
    responses = rollout.responses(EOS)
    assert all(EOS not in r for r in responses)


def test_sft_batches_mask_the_prompt_and_padding() -> None:
    data = SFTData([([1, 2, 3], [4, 5, EOS]), ([6], [2, EOS])], pad_id=0)
    x, y = data.get_batch(8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 5)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        if row_x[0] == 1:
            assert row_x == [1, 2, 3, 4, 5] and row_y == [-1, -1, 4, 5, EOS]
        else:
            assert row_x == [6, 2, 0, 0, 0] and row_y == [2, EOS, -1, -1, -1]
    # the model's loss is then the mean cross-entropy over the response tokens only
    model = tiny_gpt()
    logits = model(x).logits
    keep = y >= 0
    expected = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(model(x, targets=y).loss, expected)
    with pytest.raises(ValueError, match="block_size"):
        data.get_batch(2, 4)
    with pytest.raises(ValueError, match="prompt ids"):
        SFTData([([1], [])], pad_id=0)


def test_reward_model_is_a_scalar_head_on_a_copy() -> None:
    gpt = tiny_gpt()
    before = {k: v.clone() for k, v in gpt.state_dict().items()}
    rm = reward_model(gpt)
    assert rm.gpt is not gpt and rm.head.out_features == 1
    idx = torch.tensor([[1, 2, 3, EOS, EOS], [1, 2, 3, 4, EOS]])
    scores = sequence_scores(rm, idx, torch.tensor([3, 4]))
    assert scores.shape == (2,)
    torch.testing.assert_close(scores[0], sequence_scores(rm, idx[:1, :4], torch.tensor([3]))[0])
    scores.sum().backward()
    assert all(torch.equal(v, gpt.state_dict()[k]) for k, v in before.items())


def test_pairwise_loss_is_eq_1_of_instructgpt() -> None:
    r_chosen, r_rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, -1.0])
    by_hand = -sum(math.log(1 / (1 + math.exp(-d))) for d in (1.0, 0.0, 3.0)) / 3
    assert pairwise_loss(r_chosen, r_rejected).item() == pytest.approx(by_hand)
    assert pairwise_loss(r_chosen + 5, r_rejected + 5).item() == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="shapes"):
        pairwise_loss(r_chosen, r_rejected[:2])


def _comparisons() -> Comparisons:
    """Prompt [1, 2]; responses with token 5 are preferred to those without (K = 3 a prompt)."""
    rows, group, pairs = [], [], []
    for prompt in range(8):
        tail = [3 + prompt % 2, 4]
        for response in ([5, *tail], [6, *tail], [6, 4, 3]):
            rows.append([1, 2, *response, EOS])
            group.append(prompt)
        first = 3 * prompt
        pairs += [(first, first + 1), (first, first + 2)]
    idx = torch.tensor(rows)
    mask = torch.zeros_like(idx, dtype=torch.bool)
    mask[:, 2:] = True
    return Comparisons(idx, mask, torch.tensor(group), torch.tensor(pairs))


def test_comparisons_subset_keeps_whole_prompts() -> None:
    data = _comparisons()
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy(reward_model(tiny_gpt()), data.subset(torch.tensor([99])))
    part = data.subset(torch.tensor([2, 5]))
    assert len(part.idx) == 6 and part.group.tolist() == [2, 2, 2, 5, 5, 5]
    assert part.pairs.tolist() == [[0, 1], [0, 2], [3, 4], [3, 5]]
    assert torch.equal(part.idx[3], data.idx[15])


def test_reward_model_learns_the_preference() -> None:
    data = _comparisons()
    rm = reward_model(tiny_gpt())
    losses = train_reward_model(rm, data, steps=40, prompts_per_batch=4, lr=3e-3)
    assert losses[-1] < losses[0]
    assert pairwise_accuracy(rm, data) == 1.0


def test_normalise_scores_gives_mean_zero_and_unit_spread() -> None:
    data = _comparisons()
    rm = reward_model(tiny_gpt())
    torch.nn.init.normal_(rm.head.weight)
    before = sequence_scores(rm, data.idx, data.last)
    normalise_scores(rm, data.idx, data.last)
    after = sequence_scores(rm, data.idx, data.last)
    assert abs(after.mean().item()) < 1e-5 and after.std().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(after, (before - before.mean()) / before.std(), atol=1e-4, rtol=1e-4)


def test_sampled_kl_estimates_the_kl_divergence() -> None:
    model, other = tiny_gpt(0), tiny_gpt(1)
    with torch.no_grad():  # a sharper distribution than the other's near-uniform one
        model.lm_head.weight.mul_(30)
    prompt = [[1, 2]]
    p = torch.log_softmax(model(torch.tensor(prompt)).logits[0, -1], dim=-1)
    q = torch.log_softmax(other(torch.tensor(prompt)).logits[0, -1], dim=-1)
    exact = (p.exp() * (p - q)).sum().item()  # one-token responses: KL over the vocabulary
    generator = torch.Generator().manual_seed(0)
    rollout = generate_responses(model, prompt * 4000, 1, EOS, generator=generator)
    kl = sampled_kl(model, other, rollout)
    assert kl.shape == (4000,) and exact > 0.5
    assert abs(kl.mean().item() - exact) < 4 * kl.std().item() / 4000**0.5
    assert sampled_kl(model, model, rollout).abs().max() < 1e-6


def test_command_line_runs_every_stage(tmp_path) -> None:
    out = tmp_path / "run"
    tiny = [
        "--sft-examples",
        "40",
        "--sft-steps",
        "2",
        "--rm-prompts",
        "6",
        "--k",
        "2",
        "--rm-steps",
        "1",
        "--ppo-steps",
        "1",
        "--ppo-batch-size",
        "4",
        "--ppo-minibatch-size",
        "2",
        "--ppo-prompts",
        "4",
        "--dpo-steps",
        "1",
        "--dpo-batch-size",
        "2",
        "--eval-prompts",
        "3",
        "--max-new-tokens",
        "6",
    ]
    results = main(
        [
            "--base",
            str(BASE),
            "--out",
            str(out),
            "--seeds",
            "3",
            "--save-models",
            "3",
            "--ppo-betas",
            "0",
            "0.5",
            *tiny,
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    seed = saved["seeds"]["3"]
    assert set(seed["ppo"]) == {"0", "0.5"} and len(seed["ppo"]["0"]["history"]["score"]) == 1
    assert {"labeler", "perfect"} <= set(seed["ppo"]["0.5"]["history"]["extra"])
    assert 0.0 <= seed["rm"]["accuracy_train"] <= 1.0 and len(seed["sft_loss"]) == 2
    for name in ("base", "sft"):
        assert 0.0 <= seed["eval"][name]["labeler"] <= 1.0
    assert seed["eval"]["sft"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert set(seed["best_of_n"]) == {"1", "2", "4", "8", "16"}
    assert set(seed["eval"]["sft"]["criteria"]) >= {"mentions", "length", "fluent"}
    for name in ("sft", "ppo_beta0", "ppo_beta0.5", "dpo"):
        GPT.load(out / "seed3" / name)
    assert SequenceClassifier.load(out / "seed3" / "reward_model").head.out_features == 1
    with pytest.raises(SystemExit):
        main(["--base", str(BASE), "--out", str(out), *tiny])  # results.json exists
    with pytest.raises(SystemExit):
        main(["--base", str(BASE), "--out", str(tmp_path / "x"), "--save-models", "9", *tiny])
