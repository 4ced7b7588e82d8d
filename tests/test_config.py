"""GPTConfig: presets, overrides that keep a preset consistent, and clear errors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlib import GPTConfig
from gptlib.config import ADDED_FIELDS, CONFIG_FORMAT

ROOT = Path(__file__).resolve().parents[1]


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
        (dict(n_layer=0), "n_layer=0 is out of range; n_layer must be a positive integer"),
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
        (dict(rotary_scaling="linear", rotary_scaling_factor=2.0), "position='learned'"),
        (dict(position="rotary", rotary_scaling_factor=2.0), "has no effect with rotary_scaling='none'"),
        (dict(position="rotary", n_head=192, n_embd=384, rotary_scaling="ntk"), "at least 4 rotated"),
        (dict(capacity_factor=1.25), "capacity_factor only applies to mlp='moe'"),
        (dict(router_aux_loss_coef=0.01), "router_aux_loss_coef only applies to mlp='moe'"),
    ],
)  # fmt: skip
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


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(norm_eps=-1), ValueError, r"norm_eps=-1 is out of range; norm_eps must be a finite number > 0"),
        (dict(norm_eps=float("nan")), ValueError, r"norm_eps=nan is out of range"),
        (dict(rotary_base=0), ValueError, r"rotary_base=0 is out of range; rotary_base must be a finite number > 1"),
        (dict(rotary_base=float("inf")), ValueError, r"rotary_base=inf is out of range"),
        (dict(rotary_fraction=1.5), ValueError, r"rotary_fraction=1\.5 is out of range.*in \(0, 1\]"),
        (dict(tie_embeddings="no"), TypeError, r"tie_embeddings='no' is a str, but tie_embeddings must be True or False"),
        (dict(final_norm=1), TypeError, r"final_norm=1 is a int, but final_norm must be True or False"),
        (dict(scale_embeddings="yes"), TypeError, r"scale_embeddings='yes' is a str"),
        (dict(dropout="0.1"), TypeError, r"dropout='0\.1' is a str, but dropout must be a finite number in \[0, 1\)"),
        (dict(dropout=-0.1), ValueError, r"dropout=-0\.1 is out of range"),
        (dict(attention_pattern="dense"), TypeError, r"attention_pattern='dense' must be a list or tuple.*\('dense',\)"),
        (dict(attention_pattern=("dense", 5)), ValueError, r"attention layout 5 is unknown"),
        (dict(attention_pattern=()), ValueError, r"attention_pattern is empty"),
        (dict(init_std=-0.02), ValueError, r"init_std=-0\.02 is out of range; init_std must be a finite number > 0"),
        (dict(window_size=2.5, attention_pattern=("local",)), TypeError, r"window_size=2\.5 is a float, but window_size must be a positive integer or None"),
        (dict(sparse_stride=0), ValueError, r"sparse_stride=0 is out of range"),
        (dict(n_layer="2"), TypeError, r"n_layer='2' is a str, but n_layer must be a positive integer"),
        (dict(n_embd=64.0), TypeError, r"n_embd=64\.0 is a float"),
        (dict(vocab_size=True), TypeError, r"vocab_size=True is a bool"),
        (dict(n_experts=-1), ValueError, r"n_experts=-1 is out of range; n_experts must be an integer >= 0"),
        (dict(n_experts_per_token=0), ValueError, r"n_experts_per_token=0 is out of range"),
        (dict(rotary_scaling="yarn"), ValueError, r"rotary_scaling='yarn' is unknown; choose one of \('none', 'linear', 'ntk'\)"),
        (dict(rotary_scaling_factor=0.5), ValueError, r"rotary_scaling_factor=0\.5 is out of range; rotary_scaling_factor must be a finite number >= 1"),
        (dict(rotary_scaling_factor=float("inf")), ValueError, r"rotary_scaling_factor=inf is out of range"),
        (dict(capacity_factor=0.0), ValueError, r"capacity_factor=0\.0 is out of range; capacity_factor must be a finite number > 0 \(such as 1\.25\) or None"),
        (dict(capacity_factor="1.25"), TypeError, r"capacity_factor='1\.25' is a str"),
        (dict(router_aux_loss_coef=-0.01), ValueError, r"router_aux_loss_coef=-0\.01 is out of range; router_aux_loss_coef must be a finite number >= 0"),
        (dict(norm=None), ValueError, r"norm=None is unknown; choose one of \('layernorm', 'rmsnorm'\)"),
        (dict(init=3), ValueError, r"init=3 is unknown"),
        (dict(extra=[]), TypeError, r"extra=\[\] must be a dict"),
        (dict(extra={"f": object()}), TypeError, r"extra=.* must hold only JSON values"),
    ],
)  # fmt: skip
def test_every_value_is_checked_with_the_field_the_value_and_what_is_allowed(
    overrides, error, message
):
    with pytest.raises(error, match=message):
        GPTConfig(**overrides)


def _wrong_type(value):
    """A value of the wrong type for a field whose default is `value`."""
    if isinstance(value, bool):
        return 1  # an int where a bool belongs
    if isinstance(value, (int, float)) or value is None:
        return "1"  # a string where a number belongs
    if isinstance(value, str):
        return 42
    if isinstance(value, tuple):
        return "dense"  # a bare string where a sequence belongs
    return ["not", "a", "dict"]


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(GPTConfig)])
def test_every_field_refuses_a_value_of_the_wrong_type(name):
    default = getattr(GPTConfig(), name)
    if name in ("window_size", "sparse_stride"):  # None by default; checked when given
        default = 4
    with pytest.raises((TypeError, ValueError), match=name):
        GPTConfig(**{name: _wrong_type(default)})


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    config = GPTConfig(n_layer=np.int64(3), n_head=np.int32(4), n_embd=64, dropout=np.float32(0.5))
    assert (config.n_layer, config.dropout) == (3, 0.5)
    assert type(config.n_layer) is int and type(config.dropout) is float
    json.dumps(config.to_dict())  # saveable


def test_numpy_bools_are_bools_and_bad_preset_sizes_are_named():
    assert GPTConfig(tie_embeddings=np.bool_(False)).tie_embeddings is False
    # a size of the wrong type reaches validation, which names it (no formatting TypeError)
    with pytest.raises(TypeError, match=r"n_head='4' is a str, but n_head must be a positive"):
        GPTConfig.from_preset("mixtral", n_head="4")
    with pytest.raises(TypeError, match=r"n_embd=64\.0 is a float"):
        GPTConfig.from_preset("llama", n_embd=64.0)
    assert GPTConfig.from_preset("mixtral", n_head=np.int64(8), n_embd=64).n_kv_head == 2
    with pytest.raises(TypeError, match=r"diff compares two GPTConfigs, got dict"):
        GPTConfig().diff(GPTConfig().to_dict())


def test_validate_checks_a_field_changed_after_creation():
    config = GPTConfig()
    config.norm_eps = 0.0
    with pytest.raises(ValueError, match="norm_eps=0.0 is out of range"):
        config.validate()


def test_from_dict_names_a_missing_field_instead_of_defaulting_it():
    saved = {**GPTConfig().to_dict(), "format_version": CONFIG_FORMAT, "model_sha256": "ab"}
    del saved["tie_embeddings"]
    with pytest.raises(ValueError, match=r"has no field\(s\) \['tie_embeddings'\]"):
        GPTConfig.from_dict(saved)
    del saved["format_version"]  # format 1 has tie_embeddings too
    with pytest.raises(ValueError, match=r"format 1\) has no field\(s\) \['tie_embeddings'\]"):
        GPTConfig.from_dict(saved)


def test_a_field_added_in_a_later_format_is_explicit_about_old_files():
    assert CONFIG_FORMAT == 3
    assert ADDED_FIELDS == {
        "scale_embeddings": (2, False),
        "rotary_scaling": (3, "none"),
        "rotary_scaling_factor": (3, 1.0),
        "capacity_factor": (3, None),
        "router_aux_loss_coef": (3, 0.0),
    }
    # Each added field's old value is its default: a model of an older file computes as before.
    defaults = GPTConfig()
    assert all(getattr(defaults, name) == old for name, (_, old) in ADDED_FIELDS.items())
    format_2 = GPTConfig().to_dict()
    for name in ("rotary_scaling", "rotary_scaling_factor", "capacity_factor",
                 "router_aux_loss_coef"):  # fmt: skip
        del format_2[name]
    assert GPTConfig.from_dict({**format_2, "format_version": 2}) == GPTConfig()
    with pytest.raises(ValueError, match=r"format 3\) has no field\(s\) \['rotary_scaling'"):
        GPTConfig.from_dict({**format_2, "format_version": 3})
    old = GPTConfig(scale_embeddings=False).to_dict()
    del old["scale_embeddings"]  # a format 1 file, written before the field existed
    assert GPTConfig.from_dict(old).scale_embeddings is False
    with pytest.raises(ValueError, match=r"format 2\) has no field\(s\) \['scale_embeddings'\]"):
        GPTConfig.from_dict({**old, "format_version": 2})
    with pytest.raises(ValueError, match="newer than this gptlib reads"):
        GPTConfig.from_dict({**GPTConfig().to_dict(), "format_version": CONFIG_FORMAT + 1})
    with pytest.raises(ValueError, match="format_version='2' must be an integer"):
        GPTConfig.from_dict({**GPTConfig().to_dict(), "format_version": "2"})


def test_the_config_module_cites_the_books_bibliography_not_outside_files():
    import gptlib.config

    assert "notebooks/references.md" in gptlib.config.__doc__
    assert (ROOT / "notebooks" / "references.md").is_file()
    outside = "shared" + "/reference"  # in two pieces, so that this file does not cite it
    assert outside not in (ROOT / "gptlib" / "config.py").read_text(encoding="utf-8")


def test_the_locally_banded_reading_of_gpt3_drops_only_the_strided_part():
    from gptlib.attention import attention_mask
    from gptlib.config import GPT3_LOCALLY_BANDED

    strided, local = (
        GPTConfig.from_preset("gpt3"),
        GPTConfig.from_preset("gpt3", **GPT3_LOCALLY_BANDED),
    )
    assert {row[0] for row in strided.diff(local)} == {
        "attention_pattern",
        "window_size",
        "sparse_stride",
    }
    assert [local.layer_layout(i) for i in range(4)] == ["dense", "local"] * 2
    positions = torch.arange(300)
    band = attention_mask("local", positions, positions, window_size=local.window_size)
    both = attention_mask("strided", positions, positions, sparse_stride=strided.sparse_stride)
    assert (band <= both).all()  # every key of the band is a key of the strided layer
    extra = both & ~band  # what the strided part adds: earlier keys a multiple of 128 back
    offsets = (positions[:, None] - positions[None, :])[extra]
    assert bool(extra.any()) and bool((offsets % 128 == 0).all()) and bool((offsets >= 128).all())
