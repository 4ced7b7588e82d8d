"""The toy instruction world (gptlib.instructions) and its hidden labeler (gptlib.labeler)."""

import random

import pytest
import torch

from gptlib import GPT, GPTConfig
from gptlib.bpe import BPETokenizer
from gptlib.data import make_stories
from gptlib.instructions import (
    END_OF_TEXT,
    FLAWS,
    KINDS,
    Instruction,
    demonstration,
    demonstrations,
    encode_example,
    encode_prompt,
    end_of_text_id,
    label_comparisons,
    make_instructions,
    respond,
)
from gptlib.labeler import Labeler
from gptlib.tokenizers import CharTokenizer

LABELER = Labeler()
PET = Instruction("pet", "Write a story about a cat named Pia.", ("Pia", "cat"), (3, 6))
SHORT_PET = Instruction("pet", "Write a short story about a cat named Pia.", ("Pia", "cat"), (1, 2))
COUNT = Instruction(
    "count", "Write a short story in which Ada counts three dogs.", ("Ada", "dogs"), (1, 2), 3
)
LIST = Instruction("list", "List two animals.", (), (1, 1), 2)


def test_instructions_are_seeded_and_cover_every_kind() -> None:
    first = make_instructions(200, seed=3)
    assert first == make_instructions(200, seed=3)
    assert first != make_instructions(200, seed=4)
    assert {i.kind for i in first} == set(KINDS)
    assert {i.kind for i in make_instructions(50, seed=0, kinds=["list"])} == {"list"}
    for instruction in first:
        for word in instruction.required:
            assert word in instruction.text


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="positive"):
        make_instructions(0)
    with pytest.raises(ValueError, match="kinds"):
        make_instructions(5, kinds=["poem"])
    with pytest.raises(ValueError, match="unknown instruction kind"):
        demonstration(Instruction("poem", "Write a poem.", (), (1, 1)))
    with pytest.raises(TypeError, match="decoded string"):
        LABELER.criteria(PET, [1, 2, 3])


def test_every_demonstration_gets_the_full_score() -> None:
    rng = random.Random(0)
    for instruction in make_instructions(400, seed=11):
        text = demonstration(instruction, rng)
        assert LABELER.criteria(instruction, text) == dict.fromkeys(
            LABELER.criteria(instruction, text), 1.0
        ), (instruction, text)
        assert LABELER.score(instruction, text) == 1.0


def test_each_flaw_of_a_demonstration_costs_points() -> None:
    costs = {"unfinished": "finished", "repeats": "no_repeats", "runs_on": "length"}
    for instruction in make_instructions(60, seed=2):
        for flaw in FLAWS:
            text = demonstration(instruction, 4, flaw)
            assert text[:5] == demonstration(instruction, 4)[:5]  # the same response, spoilt
            assert LABELER.criteria(instruction, text)[costs[flaw]] < 1.0, (flaw, text)
    with pytest.raises(ValueError, match="unknown flaw"):
        demonstration(PET, 0, "typo")


def test_demonstrations_have_the_requested_share_of_flaws() -> None:
    instructions = make_instructions(1000, seed=6)
    texts = demonstrations(instructions, seed=1, flaw_rate=0.3)
    assert texts == demonstrations(instructions, seed=1, flaw_rate=0.3)
    flawed = sum(LABELER.score(i, t) < 1.0 for i, t in zip(instructions, texts, strict=True))
    assert 250 < flawed < 350
    assert all(
        LABELER.score(i, t) == 1.0
        for i, t in zip(instructions, demonstrations(instructions), strict=True)
    )
    with pytest.raises(ValueError, match="flaw_rate"):
        demonstrations(instructions, flaw_rate=1.5)


def test_demonstrations_follow_the_instruction() -> None:
    text = demonstration(COUNT, 5)
    assert "Ada" in text and '"I saw three dogs," said Ada.' in text
    assert demonstration(COUNT, 5) == text  # a seed gives the same demonstration
    assert len(demonstration(LIST, 1).split(" and ")) == 2


def test_stories_from_the_corpus_are_fluent() -> None:
    # The pre-training stories use the same grammar, so the labeler finds them fluent.
    for story in make_stories(50, seed=123).strip().split("\n\n"):
        assert LABELER.criteria(PET, story)["fluent"] == 1.0


def test_each_flaw_costs_its_own_criterion() -> None:
    good = "Ada had a cat called Pia. Pia the cat ate soup and was glad."
    assert LABELER.score(SHORT_PET, good) == 1.0
    flaws = {
        "mentions": "Ada had a dog called Pia. Pia the dog ate soup and was glad.",
        "length": good + " Pia the cat ate rice. Ada was happy.",
        "fluent": "Ada had a cat called Pia Pia. Pia the cat ate soup and was glad.",
        "no_repeats": "Ada had a cat called Pia. Ada had a cat called Pia.",
        "finished": "Ada had a cat called Pia. Pia the cat ate",
    }
    for criterion, text in flaws.items():
        values = LABELER.criteria(SHORT_PET, text)
        assert values[criterion] < 1.0, (criterion, values)
        assert LABELER.score(SHORT_PET, text) < 1.0
    assert LABELER.criteria(SHORT_PET, flaws["mentions"])["mentions"] == 0.5
    assert LABELER.criteria(SHORT_PET, flaws["no_repeats"])["no_repeats"] == 0.5


def test_counting_and_lists() -> None:
    wrong_count = 'Ada went to the hill and counted: one dog, two dogs. "I saw two dogs," said Ada.'
    assert LABELER.criteria(COUNT, wrong_count)["count"] == 0.0
    assert LABELER.criteria(LIST, "A cat and a fox.")["count"] == 1.0
    assert LABELER.criteria(LIST, "A cat and a cat.")["count"] == 0.0  # one animal twice
    assert LABELER.criteria(LIST, "A cat, a fox and an owl.")["count"] == 0.0
    assert "mentions" not in LABELER.criteria(LIST, "A cat and a fox.")


def test_rank_and_preference_pairs() -> None:
    responses = [
        "Ada had a dog called Pia. Pia the dog ate soup and was glad.",  # wrong animal
        "Ada had a cat called Pia. Pia the cat ate soup and was glad.",  # perfect
        "Ada had a cat called Pia. Ada had a cat called Pia. Ada had a cat called Pia.",
        "Ada had a cat called Pia. Pia the cat ate soup and was glad.",  # perfect again
    ]
    scores = [LABELER.score(SHORT_PET, r) for r in responses]
    order = LABELER.rank(SHORT_PET, responses)
    assert order[:2] == [1, 3]  # ties keep their order
    assert [scores[i] for i in order] == sorted(scores, reverse=True)
    pairs = LABELER.preference_pairs(SHORT_PET, responses)
    assert len(pairs) == 5  # C(4, 2) = 6 pairs, less the tie between 1 and 3
    assert (1, 3) not in pairs and (3, 1) not in pairs
    assert all(scores[chosen] > scores[rejected] for chosen, rejected in pairs)


def test_encode_prompt_pads_on_the_left_with_newlines() -> None:
    tokenizer = BPETokenizer.train(make_stories(100), 300)
    ids = encode_prompt(tokenizer, PET, length=60)
    text_ids = tokenizer.encode(PET.text + "\n")
    assert len(ids) == 60 and ids[-len(text_ids) :] == text_ids
    assert tokenizer.decode(ids) == "\n" * (60 - len(text_ids)) + PET.text + "\n"
    with pytest.raises(ValueError, match="larger length"):
        encode_prompt(tokenizer, PET, length=5)


def _tiny_model_and_tokenizer():
    tokenizer = BPETokenizer.train(make_stories(100), 300)
    torch.manual_seed(0)
    config = GPTConfig.from_preset(
        "gpt2", n_layer=1, n_head=2, n_embd=16, block_size=48, vocab_size=tokenizer.vocab_size
    )
    return GPT(config).eval(), tokenizer


def test_encode_example_ends_the_response_with_end_of_text() -> None:
    _, tokenizer = _tiny_model_and_tokenizer()
    prompt, response = encode_example(tokenizer, PET, "Ada had a cat called Pia.", length=30)
    assert prompt == encode_prompt(tokenizer, PET, 30)
    assert response[-1] == end_of_text_id(tokenizer) == tokenizer.special_tokens[END_OF_TEXT]
    assert tokenizer.decode(response[:-1]) == "Ada had a cat called Pia."
    with pytest.raises(ValueError, match="end responses"):
        end_of_text_id(CharTokenizer.from_text("abc"))


def test_respond_and_label_comparisons() -> None:
    model, tokenizer = _tiny_model_and_tokenizer()
    instructions = [SHORT_PET, LIST]
    rollout, texts = respond(
        model, tokenizer, instructions, 3, 1, max_new_tokens=6, prompt_length=40
    )
    assert len(texts) == len(rollout.idx) == 6
    assert (
        respond(model, tokenizer, instructions, 3, 1, max_new_tokens=6, prompt_length=40)[1]
        == texts
    )
    for row, instruction in zip(rollout.idx, [SHORT_PET] * 3 + [LIST] * 3, strict=True):
        assert tokenizer.decode(row[:40].tolist()).endswith(instruction.text + "\n")
    # Hand the labeler texts that it must rank: the first response to each is the best.
    texts = [
        "Ada had a cat called Pia.",
        "Ada had a dog.",
        "Ada had a dog.",
        "A cat and a dog.",
        "A cat and a cat.",
        "A cat.",
    ]
    data = label_comparisons(Labeler(), instructions, rollout, texts)
    assert data.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert sorted(map(tuple, data.pairs.tolist())) == [(0, 1), (0, 2), (3, 4), (3, 5)]
    with pytest.raises(ValueError, match="K >= 2"):
        label_comparisons(Labeler(), instructions, rollout, texts[:5])
