"""Each family loaded by GPT.from_pretrained computes what Hugging Face transformers computes.

For every supported model_type a tiny transformers model gets random weights (norm gains and
biases too, so a swapped or misplaced tensor cannot hide), is saved with save_pretrained to a
temporary folder, and is loaded into gptlib. Logits must agree within 1e-4 (float32) on the
fast path and on the explicit path that returns attention weights, the attention weights
must agree with transformers' own, and greedy decoding with our KV cache must produce the
tokens transformers' generate produces. Cases include the variations that break ports: a
local window shorter than the sequence, partial rotary, several query heads per key/value
head, a sliding window shorter than the sequence, top-2 mixture of experts, an MLP width
that is not 4·d, and a tied and an untied output head for every family. The same models
still match when config.json leaves out every field that equals transformers' default (as
files written by older transformers do), and every field gptlib cannot reproduce is refused
by name.
"""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptlib import GPT  # noqa: E402
from gptlib.hf import (  # noqa: E402
    hf_config_to_gpt,
    load_hf_checkpoint,
    randomise_for_parity,
    resolve_checkpoint,
)

VOCAB, SEQ, NEW_TOKENS, TOLERANCE = 128, 24, 10, 1e-4


def _case(config_class: str, model_class: str, **fields):
    return config_class, model_class, fields


CASES = {
    "gpt1-post-ln": _case(
        "OpenAIGPTConfig", "OpenAIGPTLMHeadModel", n_positions=64, n_embd=48, n_layer=2, n_head=4
    ),
    "gpt2-mlp-not-4d": _case(
        "GPT2Config", "GPT2LMHeadModel", n_positions=64, n_embd=48, n_layer=2, n_head=4, n_inner=80
    ),
    "gpt-neo-window-shorter-than-sequence": _case(
        "GPTNeoConfig", "GPTNeoForCausalLM", max_position_embeddings=64, hidden_size=48,
        num_layers=3, num_heads=4, window_size=8,
        attention_types=[[["global", "local"], 1], [["local"], 1]],
    ),
    "gpt-j-partial-interleaved-rotary": _case(
        "GPTJConfig", "GPTJForCausalLM", n_positions=64, n_embd=64, n_layer=2, n_head=4,
        rotary_dim=6,
    ),
    "gpt-neox-parallel-quarter-rotary": _case(
        "GPTNeoXConfig", "GPTNeoXForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, rotary_pct=0.25,
    ),
    "gpt-neox-serial-no-bias": _case(
        "GPTNeoXConfig", "GPTNeoXForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, rotary_pct=0.5,
        use_parallel_residual=False, attention_bias=False, hidden_act="gelu_fast",
    ),
    "llama-gqa": _case(
        "LlamaConfig", "LlamaForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, intermediate_size=88,
        rope_theta=500.0,
    ),
    "llama-biases-tied": _case(
        "LlamaConfig", "LlamaForCausalLM", max_position_embeddings=64, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, intermediate_size=64,
        attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
    ),
    "mistral-sliding-window-shorter-than-sequence": _case(
        "MistralConfig", "MistralForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
        sliding_window=8,
    ),
    "mixtral-top2-of-4-experts-sliding-window": _case(
        "MixtralConfig", "MixtralForCausalLM", max_position_embeddings=64, hidden_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
    ),
    # The other choice of tie_word_embeddings for every family, and other honoured fields.
    "gpt1-untied": _case(
        "OpenAIGPTConfig", "OpenAIGPTLMHeadModel", n_positions=64, n_embd=32, n_layer=1, n_head=4,
        tie_word_embeddings=False,
    ),
    "gpt2-untied-unscaled-upcast": _case(
        "GPT2Config", "GPT2LMHeadModel", n_positions=64, n_embd=32, n_layer=2, n_head=4,
        tie_word_embeddings=False, scale_attn_weights=False, reorder_and_upcast_attn=True,
        activation_function="relu",
    ),
    "gpt-neo-untied": _case(
        "GPTNeoConfig", "GPTNeoForCausalLM", max_position_embeddings=64, hidden_size=32,
        num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8,
        tie_word_embeddings=False,
    ),
    "gpt-j-tied-default-rotary-dim": _case(  # rotary_dim 64 (the default) of head_dim 128
        "GPTJConfig", "GPTJForCausalLM", n_positions=64, n_embd=256, n_layer=1, n_head=2,
        tie_word_embeddings=True,
    ),
    "gpt-neox-tied-default-rotary": _case(  # rotary_pct 0.25 and base 10000 by default
        "GPTNeoXConfig", "GPTNeoXForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=1, num_attention_heads=4, intermediate_size=96,
        tie_word_embeddings=True,
    ),
    "mistral-tied-gqa-theta": _case(
        "MistralConfig", "MistralForCausalLM", max_position_embeddings=64, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        sliding_window=None, tie_word_embeddings=True, rope_theta=100.0,
    ),
    # Position interpolation (rope_type "linear"), the one RoPE scaling gptlib honours.
    "llama-linear-rope-scaling": _case(
        "LlamaConfig", "LlamaForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
        rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0},
    ),
    "gpt-neox-linear-rope-scaling-partial": _case(
        "GPTNeoXConfig", "GPTNeoXForCausalLM", max_position_embeddings=64, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        rope_parameters={"rope_type": "linear", "factor": 2.5, "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.5},
    ),
    "mixtral-tied-top1": _case(
        "MixtralConfig", "MixtralForCausalLM", max_position_embeddings=64, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4, intermediate_size=48,
        num_local_experts=3, num_experts_per_tok=1, tie_word_embeddings=True,
    ),
}  # fmt: skip


def _hf_model(name: str) -> torch.nn.Module:
    config_class, model_class, fields = CASES[name]
    config = getattr(transformers, config_class)(vocab_size=VOCAB, **fields)
    config._attn_implementation = "eager"  # the implementation that returns attention weights
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config)
    randomise_for_parity(model)
    return model.eval()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """For every case: (transformers model, the same weights loaded through gptlib)."""
    loaded = {}
    for name in CASES:
        hf = _hf_model(name)
        folder = tmp_path_factory.mktemp(name)
        hf.save_pretrained(folder)
        loaded[name] = (hf, GPT.from_pretrained(folder))
    return loaded


def _tokens(batch: int = 2, length: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", CASES)
def test_logits_and_attention_match_transformers(pairs: dict, name: str) -> None:
    hf, ours = pairs[name]
    idx = _tokens()
    with torch.no_grad():
        expected = hf(idx, output_attentions=True)
        fast = ours(idx).logits
        explicit = ours(idx, return_attention=True)
    assert expected.logits.abs().max() > 1.0  # random weights give logits worth comparing
    assert (fast - expected.logits).abs().max() < TOLERANCE
    assert (explicit.logits - expected.logits).abs().max() < TOLERANCE
    for layer, (mine, theirs) in enumerate(
        zip(explicit.attentions, expected.attentions, strict=True)
    ):
        assert mine.shape == theirs.shape, f"layer {layer}"
        assert (mine - theirs).abs().max() < TOLERANCE, f"layer {layer}"


@pytest.mark.parametrize("name", CASES)
def test_greedy_continuation_with_kv_cache_matches_generate(pairs: dict, name: str) -> None:
    hf, ours = pairs[name]
    prompt = _tokens(batch=1)
    expected = hf.generate(
        prompt, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        pad_token_id=0, eos_token_id=None,
    )  # fmt: skip
    got = ours.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0.0, use_cache=True)
    assert got.tolist() == expected.tolist()


def test_configs_map_onto_the_family_presets(pairs: dict) -> None:
    neo = pairs["gpt-neo-window-shorter-than-sequence"][1].config
    assert neo.attention_pattern == ("dense", "local", "local") and neo.window_size == 8
    assert not neo.attention_scale and not neo.qkv_bias
    gptj = pairs["gpt-j-partial-interleaved-rotary"][1].config
    assert (gptj.rotary_dim, gptj.rotary_pairing, gptj.shared_norm) == (6, "interleaved", True)
    serial = pairs["gpt-neox-serial-no-bias"][1].config
    assert (serial.norm_placement, serial.rotary_dim, serial.qkv_bias) == ("pre", 8, False)
    llama = pairs["llama-gqa"][1].config
    assert (llama.n_head, llama.n_kv_head, llama.d_ff, llama.rotary_base) == (8, 2, 88, 500.0)
    tied = pairs["llama-biases-tied"][1]
    assert tied.lm_head.weight is tied.tok_emb.weight
    mistral = pairs["mistral-sliding-window-shorter-than-sequence"][1].config
    assert (mistral.attention_pattern, mistral.window_size) == (("local",), 8)
    mixtral = pairs["mixtral-top2-of-4-experts-sliding-window"][1].config
    assert (mixtral.mlp, mixtral.n_experts, mixtral.n_experts_per_token) == ("moe", 4, 2)
    assert mixtral.window_size == 8
    gpt1 = pairs["gpt1-post-ln"][1].config
    assert (gpt1.norm_placement, gpt1.final_norm, gpt1.tie_embeddings) == ("post", False, True)
    scaled = pairs["llama-linear-rope-scaling"][1].config
    assert (scaled.rotary_scaling, scaled.rotary_scaling_factor, scaled.rotary_base) == (
        "linear",
        4.0,
        500.0,
    )
    neox = pairs["gpt-neox-linear-rope-scaling-partial"][1].config
    assert (neox.rotary_scaling, neox.rotary_scaling_factor, neox.rotary_dim) == ("linear", 2.5, 8)
    assert pairs["llama-gqa"][1].config.rotary_scaling == "none"


def test_sliding_window_bounds_the_kv_cache(pairs: dict) -> None:
    from gptlib.attention import KVCache

    model = pairs["mistral-sliding-window-shorter-than-sequence"][1]
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(_tokens(batch=1, length=20), kv_cache=cache)
    assert all(layer.k.size(2) == 8 for layer in cache.layers)
    assert cache.layers[0].k.size(1) == model.config.n_kv_head  # GQA caches only the kv heads


# ------------------------------------------------------------------------------ file formats
def test_pytorch_model_bin_and_a_base_model_without_prefix_load(tmp_path: Path) -> None:
    hf = _hf_model("gpt2-mlp-not-4d")
    base = hf.transformer  # GPT2Model: tensor names without "transformer."
    base.save_pretrained(tmp_path)
    state = {name: t.contiguous() for name, t in base.state_dict().items()}
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = GPT.from_pretrained(tmp_path)
    idx = _tokens()
    with torch.no_grad():
        assert (ours(idx).logits - hf(idx).logits).abs().max() < TOLERANCE


def test_a_checkpoint_sharded_over_several_files_loads(tmp_path: Path) -> None:
    hf = _hf_model("llama-gqa")
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    idx = _tokens()
    with torch.no_grad():
        assert (GPT.from_pretrained(tmp_path)(idx).logits - hf(idx).logits).abs().max() < TOLERANCE


def test_dtype_argument_converts_the_model(tmp_path: Path) -> None:
    _hf_model("llama-gqa").save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        load_hf_checkpoint(tmp_path, dtype="bfloat16")
    model = load_hf_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.blocks[0].attn.rotary.inv_freq.dtype == torch.float32  # angles stay precise
    assert model(_tokens()).logits.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ errors
@pytest.fixture()
def gpt2_folder(tmp_path: Path) -> Path:
    _hf_model("gpt2-mlp-not-4d").save_pretrained(tmp_path)
    return tmp_path


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_unsupported_model_type_is_named(gpt2_folder: Path) -> None:
    _edit_config(gpt2_folder, model_type="bert")
    with pytest.raises(ValueError, match="model_type 'bert' is not supported.*gpt2"):
        GPT.from_pretrained(gpt2_folder)


def test_shape_mismatch_names_the_tensor(gpt2_folder: Path) -> None:
    _edit_config(gpt2_folder, n_inner=96)
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc_in\.weight the shape \(80, 48\)"):
        GPT.from_pretrained(gpt2_folder)


def test_missing_and_unused_tensors_are_named(gpt2_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(gpt2_folder / "model.safetensors")
    extra = dict(state, **{"transformer.h.0.attn.c_attn.lora": torch.zeros(2)})
    save_file(extra, gpt2_folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not use: \['transformer\.h\.0\.attn\.c_attn\.lora"):
        GPT.from_pretrained(gpt2_folder)
    del state["transformer.h.1.ln_2.bias"]
    save_file(state, gpt2_folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"no tensor 'transformer\.h\.1\.ln_2\.bias'") as caught:
        GPT.from_pretrained(gpt2_folder)
    assert isinstance(caught.value, KeyError) and str(caught.value).startswith("gpt2 checkpoint")


def test_missing_files_are_named(gpt2_folder: Path) -> None:
    (gpt2_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        GPT.from_pretrained(gpt2_folder)
    (gpt2_folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        GPT.from_pretrained(gpt2_folder)


def test_unknown_activation_and_rope_scaling_are_named() -> None:
    gpt2 = transformers.GPT2Config(activation_function="quick_gelu").to_dict()
    with pytest.raises(ValueError, match="activation_function='quick_gelu'"):
        hf_config_to_gpt(gpt2)
    # Every RoPE type but "default" and "linear" changes the frequencies (or the attention
    # temperature) in a way gptlib does not reproduce: each is refused by name.
    for kind in ("dynamic", "yarn", "llama3", "longrope", "proportional"):
        llama = transformers.LlamaConfig().to_dict()
        llama["rope_parameters"] = {"rope_type": kind, "factor": 2.0, "rope_theta": 1e4}
        with pytest.raises(ValueError, match=f"RoPE scaling '{kind}'"):
            hf_config_to_gpt(llama)
    for factor in (0.5, None, "2"):
        llama = transformers.LlamaConfig().to_dict()
        llama["rope_parameters"] = {"rope_type": "linear", "factor": factor, "rope_theta": 1e4}
        with pytest.raises(ValueError, match="linear RoPE scaling has factor="):
            hf_config_to_gpt(llama)


def test_an_unreachable_hub_id_says_how_to_use_a_local_folder() -> None:
    with pytest.raises(FileNotFoundError, match="pass a local folder"):
        resolve_checkpoint("gptlib-tests/no-such-model", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        GPT.from_pretrained("./no/such/folder/")


def test_a_hub_id_is_read_from_the_cache_first_then_fetched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _hf_model("gpt2-mlp-not-4d").save_pretrained(tmp_path)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        calls.append((repo_id, allow_patterns[1], local_files_only))
        if local_files_only:  # nothing cached yet
            raise OSError("not in the cache")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = GPT.from_pretrained("some-org/some-gpt2")
    assert model.config.d_ff == 80
    assert calls == [
        ("some-org/some-gpt2", "model*.safetensors", True),
        ("some-org/some-gpt2", "pytorch_model*.bin", True),
        ("some-org/some-gpt2", "model*.safetensors", False),
    ]


# ------------------------------------------------------------------------------ defaults
def _strip_defaults(folder: Path, config_class: str) -> None:
    """Leave out of config.json every field equal to transformers' default for the class, as
    files written by older transformers versions do; the loader must supply the same default."""
    defaults = getattr(transformers, config_class)().to_dict()
    config = json.loads((folder / "config.json").read_text())
    keep = {"model_type", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
            "max_position_embeddings", "hidden_size", "num_layers", "num_heads",
            "num_hidden_layers", "num_attention_heads", "intermediate_size"}  # fmt: skip
    stripped = {k: v for k, v in config.items() if k in keep or defaults.get(k, object()) != v}
    (folder / "config.json").write_text(json.dumps(stripped))


@pytest.mark.parametrize("name", CASES)
def test_fields_left_at_their_default_are_read_as_transformers_reads_them(
    pairs: dict, name: str, tmp_path: Path
) -> None:
    hf = pairs[name][0]
    hf.save_pretrained(tmp_path)
    _strip_defaults(tmp_path, CASES[name][0])
    ours = GPT.from_pretrained(tmp_path)
    idx = _tokens()
    with torch.no_grad():
        assert (ours(idx).logits - hf(idx).logits).abs().max() < TOLERANCE


def test_legacy_rope_spellings_are_read(pairs: dict, tmp_path: Path) -> None:
    """transformers 4 wrote rotary_pct / rotary_emb_base (GPT-NeoX) and rope_theta (Llama)."""
    for name, legacy in (
        ("gpt-neox-serial-no-bias", {"rotary_pct": 0.5, "rotary_emb_base": 10000}),
        ("llama-gqa", {"rope_theta": 500.0, "rope_scaling": None}),
    ):
        hf = pairs[name][0]
        hf.save_pretrained(tmp_path / name)
        config = json.loads((tmp_path / name / "config.json").read_text())
        del config["rope_parameters"]
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **legacy}))
        idx = _tokens()
        with torch.no_grad():
            got = GPT.from_pretrained(tmp_path / name)(idx).logits
            assert (got - hf(idx).logits).abs().max() < TOLERANCE, name


# ------------------------------------------------------------------------------ refused fields
def _hf_dict(config_class: str, **fields) -> dict:
    return getattr(transformers, config_class)(**fields).to_dict()


SMALL = {
    "GPT2Config": dict(n_embd=48, n_layer=2, n_head=4, vocab_size=VOCAB),
    "GPTJConfig": dict(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, rotary_dim=8),
    "GPTNeoConfig": dict(hidden_size=32, num_layers=2, num_heads=4, vocab_size=VOCAB,
                         attention_types=[[["global", "local"], 1]]),
    "GPTNeoXConfig": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=96, vocab_size=VOCAB),
    "LlamaConfig": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                        intermediate_size=96, vocab_size=VOCAB),
    "MistralConfig": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                          intermediate_size=96, vocab_size=VOCAB),
    "MixtralConfig": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                          intermediate_size=96, vocab_size=VOCAB),
}  # fmt: skip


@pytest.mark.parametrize(
    "config_class, edits, message",
    [
        ("GPT2Config", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
        ("GPT2Config", dict(add_cross_attention=True), "add_cross_attention=True"),
        ("GPT2Config", dict(pruned_heads={"0": [1]}), "pruned_heads="),
        ("LlamaConfig", dict(quantization_config={"quant_method": "bitsandbytes"}), "quantization_config="),
        ("GPT2Config", dict(tie_word_embeddings="yes"), "tie_word_embeddings='yes'"),
        ("GPT2Config", dict(hidden_size=99), "n_embd=48 and its alias hidden_size=99"),
        ("GPT2Config", dict(n_embd=None), r"has no \['n_embd'\]"),
        ("GPTNeoXConfig", dict(intermediate_size=None), "'intermediate_size'"),
        ("GPTNeoXConfig", dict(use_parallel_residual="no"), "use_parallel_residual='no'"),
        ("GPTNeoXConfig", dict(rope_theta=500.0), "rope_theta=500.0, which transformers"),
        ("GPTNeoXConfig", dict(head_dim=8), "head_dim=8"),
        ("GPTNeoXConfig", dict(rope_scaling={"rope_type": "default", "rope_theta": 7.0}),
         "both rope_scaling and rope_parameters"),
        ("LlamaConfig", dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}), "RoPE scaling 'yarn'"),
        ("LlamaConfig", dict(rope_parameters={"full_attention": {"rope_type": "default"}}), "per-layer RoPE"),
        ("LlamaConfig", dict(partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
        ("LlamaConfig", dict(head_dim=16), "head_dim=16"),
        ("LlamaConfig", dict(sliding_window=8), "sliding_window=8"),
        ("MistralConfig", dict(attention_bias=True), "attention_bias=True"),
        ("MixtralConfig", dict(mlp_bias=True), "mlp_bias=True"),
        ("GPTNeoConfig", dict(attention_layers=["global", "global"]), "attention_layers"),
        ("GPTJConfig", dict(rotary_dim=None), "rotary_dim=None"),
        ("GPTJConfig", dict(rotary_dim=32), "rotary_dim=32"),
    ],
)  # fmt: skip
def test_fields_gptlib_cannot_reproduce_are_refused_by_name(config_class, edits, message) -> None:
    hf = {**_hf_dict(config_class, **SMALL[config_class]), **edits}
    with pytest.raises(ValueError, match=message):
        hf_config_to_gpt(hf)


def test_config_errors_name_the_file(gpt2_folder: Path) -> None:
    config = json.loads((gpt2_folder / "config.json").read_text())
    del config["n_layer"]
    (gpt2_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: gpt2 config\.json has no \['n_layer'\]"):
        GPT.from_pretrained(gpt2_folder)


# ------------------------------------------------------------------------------ tied heads
def _rewrite_tensors(folder: Path, **changes) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    for name, tensor in changes.items():
        if tensor is None:
            del state[name]
        else:
            state[name] = tensor
    save_file(state, folder / "model.safetensors")


def test_a_tied_head_stored_beside_the_embedding_loads_only_if_equal(gpt2_folder: Path) -> None:
    from safetensors.torch import load_file

    embedding = load_file(gpt2_folder / "model.safetensors")["transformer.wte.weight"]
    _rewrite_tensors(gpt2_folder, **{"lm_head.weight": embedding.clone()})
    model = GPT.from_pretrained(gpt2_folder)
    assert model.lm_head.weight is model.tok_emb.weight
    torch.testing.assert_close(model.lm_head.weight, embedding, rtol=0, atol=0)
    _rewrite_tensors(gpt2_folder, **{"lm_head.weight": embedding + 0.5})
    with pytest.raises(ValueError, match=r"tie_word_embeddings=true.*lm_head\.weight that differs"):
        GPT.from_pretrained(gpt2_folder)


def test_an_untied_checkpoint_without_its_head_is_refused(pairs: dict, tmp_path: Path) -> None:
    hf, ours = pairs["gpt-neo-untied"]
    assert not ours.config.tie_embeddings
    assert ours.lm_head.weight is not ours.tok_emb.weight
    hf.save_pretrained(tmp_path)
    _rewrite_tensors(tmp_path, **{"lm_head.weight": None})
    with pytest.raises(KeyError, match=r"no tensor 'lm_head\.weight'"):
        GPT.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------ broken files
def test_a_malformed_shard_index_is_named(tmp_path: Path) -> None:
    _hf_model("llama-gqa").save_pretrained(tmp_path, max_shard_size="40KB")
    index = tmp_path / "model.safetensors.index.json"
    good = json.loads(index.read_text())
    index.write_text("{not json")
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json is not valid JSON"):
        GPT.from_pretrained(tmp_path)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"index\.json has no \"weight_map\""):
        GPT.from_pretrained(tmp_path)
    first = next(iter(good["weight_map"]))
    for outside in ("../x.safetensors", "/etc/x.safetensors", "sub/x.safetensors"):
        good["weight_map"][first] = outside
        index.write_text(json.dumps(good))
        with pytest.raises(ValueError, match=rf"index\.json lists the weight file '{outside}'"):
            GPT.from_pretrained(tmp_path)


def test_a_truncated_safetensors_file_is_named(gpt2_folder: Path) -> None:
    weights = gpt2_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        GPT.from_pretrained(gpt2_folder)


class NotATensor:  # a class that torch.load(weights_only=True) refuses to unpickle
    pass


def test_a_pickle_bin_is_refused_without_suggesting_weights_only_false(gpt2_folder: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(gpt2_folder / "model.safetensors")
    (gpt2_folder / "model.safetensors").unlink()
    torch.save({**state, "extra": NotATensor()}, gpt2_folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is a pickle .*NotATensor") as info:
        GPT.from_pretrained(gpt2_folder)
    assert "weights_only=False" not in str(info.value)
    assert info.value.__suppress_context__  # torch's own advice is not shown beneath it
    torch.save({**state, "extra": 3}, gpt2_folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin does not hold a dict of named"):
        GPT.from_pretrained(gpt2_folder)
    torch.save(state, gpt2_folder / "pytorch_model.bin")
    data = (gpt2_folder / "pytorch_model.bin").read_bytes()
    (gpt2_folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a readable PyTorch"):
        GPT.from_pretrained(gpt2_folder)


# ------------------------------------------------------------------------------ which loader
def test_each_loader_points_at_the_other_for_the_other_format(
    gpt2_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"Hugging Face checkpoint.*GPT\.from_pretrained"):
        GPT.load(gpt2_folder)
    ours = GPT.from_pretrained(gpt2_folder).save(tmp_path / "ours")
    with pytest.raises(ValueError, match=r"written by GPT\.save.*GPT\.load\(path\)"):
        GPT.from_pretrained(ours)


@pytest.mark.parametrize(
    "path",
    ["./gpt2", "../gpt2", ".gpt2", "~/no-such-model-dir", "/no/such/model", "models/gpt2/",
     "a/b/c", "org\\name", "org/name/"],
)  # fmt: skip
def test_a_string_that_looks_like_a_path_is_never_looked_up_online(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def no_network(*args, **kwargs):
        raise AssertionError(f"{path!r} was looked up on the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(FileNotFoundError, match="never looked up online"):
        GPT.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="never looked up online"):
        resolve_checkpoint(Path("org/name"))  # a Path is always a local path


def test_saved_buffers_are_dropped_only_if_gptlib_computes_the_same(
    pairs: dict, tmp_path: Path
) -> None:
    """Older checkpoints stored causal masks, their fill value and rotary frequencies."""
    hf, ours = pairs["gpt-neo-window-shorter-than-sequence"]  # layers: global, local, local
    hf.save_pretrained(tmp_path / "neo")
    causal = torch.ones(64, 64).tril().bool()
    local = causal ^ torch.ones(64, 64).tril(-8).bool()  # transformers' window of 8
    masks = {f"transformer.h.{i}.attn.attention.bias": m[None, None].clone()
             for i, m in enumerate((causal, local, local))}  # fmt: skip
    _rewrite_tensors(tmp_path / "neo", **masks,
                     **{"transformer.h.0.attn.attention.masked_bias": torch.tensor(-1e9)})  # fmt: skip
    idx = _tokens()
    with torch.no_grad():
        loaded = GPT.from_pretrained(tmp_path / "neo")
        torch.testing.assert_close(loaded(idx).logits, ours(idx).logits, rtol=0, atol=0)
    _rewrite_tensors(
        tmp_path / "neo", **{"transformer.h.1.attn.attention.bias": causal[None, None]}
    )
    with pytest.raises(ValueError, match=r"h\.1\.attn\.attention\.bias, which is not .* 'local'"):
        GPT.from_pretrained(tmp_path / "neo")

    hf, ours = pairs["gpt-neox-serial-no-bias"]  # rotary on 8 of 16 dimensions, base 10000
    hf.save_pretrained(tmp_path / "neox")
    name = "gpt_neox.layers.0.attention.rotary_emb.inv_freq"
    freq = ours.blocks[0].attn.rotary.inv_freq
    _rewrite_tensors(tmp_path / "neox", **{name: freq.half()})
    GPT.from_pretrained(tmp_path / "neox")
    _rewrite_tensors(tmp_path / "neox", **{name: freq * 2})
    with pytest.raises(
        ValueError, match=r"rotary_emb\.inv_freq, which is not .*\(rotary frequencies"
    ):
        GPT.from_pretrained(tmp_path / "neox")


def test_integer_and_non_finite_weights_are_refused_by_name(gpt2_folder: Path) -> None:
    from safetensors.torch import load_file

    gain = load_file(gpt2_folder / "model.safetensors")["transformer.ln_f.weight"]
    _rewrite_tensors(gpt2_folder, **{"transformer.ln_f.weight": gain.round().to(torch.int8)})
    with pytest.raises(ValueError, match=r"stores ln_f\.weight as torch\.int8.*unquantized"):
        GPT.from_pretrained(gpt2_folder)
    _rewrite_tensors(gpt2_folder, **{"transformer.ln_f.weight": gain.clone().fill_(float("nan"))})
    with pytest.raises(ValueError, match=r"ln_f\.weight holds NaN or inf"):
        GPT.from_pretrained(gpt2_folder)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda folder: hf_config_to_gpt([1]), "dict of a config.json"),
        (lambda folder: hf_config_to_gpt(None), "dict of a config.json"),
        (lambda folder: hf_config_to_gpt(transformers.GPT2Config()), r"config\.to_dict\(\)"),
        (lambda folder: GPT.from_pretrained(folder, revision=3), "revision"),
        (lambda folder: GPT.from_pretrained(folder, local_files_only="no"), "local_files_only"),
    ],
    ids=["list", "None", "transformers config", "int revision", "text flag"],
)
def test_loader_arguments_of_the_wrong_type_are_named(call, message, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=message):
        call(tmp_path)
