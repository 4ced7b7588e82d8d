"""GPTConfig: presets, overrides that keep a preset consistent, and clear errors."""

import pytest

from gptlib import GPTConfig


def test_every_preset_builds_at_full_size():
    assert GPTConfig.presets() == [
        "gpt1", "gpt2", "gpt3", "gpt-neo", "gpt-j", "gpt-neox", "llama", "mixtral",
    ]  # fmt: skip
    for name in GPTConfig.presets():
        config = GPTConfig.from_preset(name)
        assert config.extra["preset"] == name


def test_published_shapes():
    gpt2 = GPTConfig.from_preset("gpt2")
    assert (gpt2.n_layer, gpt2.n_embd, gpt2.n_head, gpt2.block_size) == (12, 768, 12, 1024)
    gptj = GPTConfig.from_preset("gpt-j")
    assert (gptj.head_dim, gptj.rotary_dim, gptj.rotary_pairing) == (256, 64, "interleaved")
    neox = GPTConfig.from_preset("gpt-neox")
    assert (neox.head_dim, neox.rotary_dim, neox.rotary_pairing) == (96, 24, "half")
    neo = GPTConfig.from_preset("gpt-neo")
    assert [neo.layer_layout(i) for i in range(4)] == ["dense", "local", "dense", "local"]
    assert neo.window_size == 256 and not neo.attention_scale
    assert GPTConfig.from_preset("llama").d_ff == 11008  # 2/3 · 4 · 4096, rounded up to 256


def test_shrinking_a_preset_keeps_dependent_fields_consistent():
    mixtral = GPTConfig.from_preset("mixtral", n_head=8, n_embd=64)
    assert mixtral.n_kv_head == 2  # four query heads per key/value head, as in the preset
    assert mixtral.d_ff == 224  # 14336 / 4096 = 3.5 times n_embd
    llama = GPTConfig.from_preset("llama", n_head=4, n_embd=64)
    assert llama.n_kv_head == 4
    with pytest.raises(ValueError, match="also pass n_kv_head"):
        GPTConfig.from_preset("mixtral", n_head=6)
    assert GPTConfig.from_preset("mixtral", n_head=6, n_embd=48, n_kv_head=3).n_kv_head == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=100, n_head=12), "not divisible by n_head"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(vocab_size=-3), "vocab_size must be a positive integer"),
        (dict(n_kv_head=5), "n_kv_head=5 must divide n_head=12"),
        (dict(n_kv_head=24), "must divide"),
        (dict(norm="batchnorm"), "norm='batchnorm' is unknown"),
        (dict(position="relative"), "position='relative' is unknown"),
        (dict(attention_pattern=("local",)), "need window_size"),
        (dict(attention_pattern=("dilated",)), "'dilated' is unknown"),
        (dict(position="rotary", rotary_fraction=0.01), "even number"),
        (dict(mlp="moe", n_experts=1, n_experts_per_token=2), "n_experts_per_token"),
        (dict(shared_norm=True), "shared_norm"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known presets: gpt1, gpt2"):
        GPTConfig.from_preset("gpt5")
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_preset("gpt2", n_layers=2)


def test_diff_lists_what_changes_between_variants():
    rows = dict((name, (a, b)) for name, a, b in GPTConfig.from_preset("gpt1").diff(
        GPTConfig.from_preset("gpt2")))  # fmt: skip
    assert rows["norm_placement"] == ("post", "pre")
    assert rows["final_norm"] == (False, True)
    assert rows["block_size"] == (512, 1024)
    assert "n_layer" not in rows and "extra" not in rows


def test_dict_round_trip_and_unknown_fields():
    config = GPTConfig.from_preset("gpt-neo")
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown field"):
        GPTConfig.from_dict({**config.to_dict(), "flash": True})
