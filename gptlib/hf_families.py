"""How each Hugging Face model_type maps onto gptlib: its preset, its config fields, its tensors.

Taught in notebooks/A_pretrained_weights.ipynb; gptlib/hf.py reads the files and uses these
tables. Each `Family` names the preset, a function from config.json to `GPTConfig` fields, and
two small tables: for each of our modules, the checkpoint tensors that fill it and how (copied,
transposed, concatenated, regrouped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import GPTConfig

# Buffers that older checkpoints saved beside the weights (causal masks, the fill value of
# masked scores, rotary frequencies); gptlib recomputes them, so each is checked against what
# gptlib computes in its place (gptlib.hf.check_recomputed) instead of being loaded.
IGNORED_TENSORS = re.compile(
    r"(\.attn(\.attention)?\.(masked_)?bias|\.attention\.(masked_)?bias|rotary_emb\.inv_freq)$"
)

# transformers' activation names -> ours. gelu_new, gelu_fast and gelu_pytorch_tanh are three
# spellings of GELU's tanh approximation.
HF_ACTIVATIONS = {
    "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu",
}  # fmt: skip

# How each family spells the five size fields: ours -> theirs. Every size field must be in
# config.json (transformers writes them all); a missing one is an error, never a default.
GPT2_SIZES = dict(
    vocab_size="vocab_size",
    block_size="n_positions",
    n_layer="n_layer",
    n_head="n_head",
    n_embd="n_embd",
)
NEO_SIZES = dict(
    vocab_size="vocab_size",
    block_size="max_position_embeddings",
    n_layer="num_layers",
    n_head="num_heads",
    n_embd="hidden_size",
)
LLAMA_SIZES = dict(
    vocab_size="vocab_size",
    block_size="max_position_embeddings",
    n_layer="num_hidden_layers",
    n_head="num_attention_heads",
    n_embd="hidden_size",
)

# Fields that no family here can reproduce, with the values that are harmless.
REFUSED_EVERYWHERE = {
    "quantization_config": ((None,), "quantized weights; load the unquantized checkpoint"),
    "pruned_heads": ((None, {}), "some attention heads were pruned away"),
    "add_cross_attention": ((None, False), "cross-attention layers (an encoder-decoder model)"),
    "is_encoder_decoder": ((None, False), "an encoder-decoder model"),
}


# ------------------------------------------------------------------------------ configs
def _refuse(hf: dict[str, Any], name: str, allowed: tuple, what: str) -> None:
    """Refuse a field whose value gptlib does not reproduce; an absent field is harmless."""
    if name in hf and hf[name] not in allowed:
        raise ValueError(
            f"{hf['model_type']} config.json sets {name}={hf[name]!r} ({what}), which gptlib "
            f"does not implement; gptlib loads only {name} in {list(allowed)}"
        )


def _sizes(hf: dict[str, Any], names: dict[str, str], eps: str, eps_default: float) -> dict:
    """The size fields, the norm epsilon (transformers' default when absent) and dropout 0."""
    missing = [theirs for theirs in names.values() if hf.get(theirs) is None]
    if missing:
        raise ValueError(
            f"{hf['model_type']} config.json has no {missing}; a checkpoint's config.json must "
            "give every size field (transformers' save_pretrained writes them all)"
        )
    for name, (allowed, what) in REFUSED_EVERYWHERE.items():
        _refuse(hf, name, allowed, what)
    sizes = {ours: hf[theirs] for ours, theirs in names.items()}
    # dropout (and Mixtral's router jitter) act only in training: set them to fine-tune.
    return dict(sizes, norm_eps=hf.get(eps, eps_default), dropout=0.0)


def _size(hf: dict[str, Any], name: str) -> Any:
    if hf.get(name) is None:
        raise ValueError(f"{hf['model_type']} config.json has no {name!r}, a size field")
    return hf[name]


def _activation(hf: dict[str, Any], key: str, default: str, table=HF_ACTIVATIONS) -> str:
    name = hf.get(key, default)
    if name not in table:
        raise ValueError(
            f"{hf['model_type']} checkpoint uses {key}={name!r}, which gptlib does "
            f"not implement; supported: {sorted(table)}"
        )
    return table[name]


def _head_dim(hf: dict[str, Any], n_embd: int, n_head: int) -> int:
    head_dim = n_embd // n_head
    if hf.get("head_dim") not in (None, head_dim):
        raise ValueError(
            f"{hf['model_type']} checkpoint sets head_dim={hf['head_dim']}, not "
            f"hidden_size/heads={head_dim}; gptlib's heads split n_embd evenly"
        )
    return head_dim


def _rope(
    hf: dict[str, Any], theta_key: str, fraction_key: str, theta: float, fraction: float
) -> tuple[float, float]:
    """RoPE (base, rotated fraction) read the way the family's transformers config reads them.

    transformers 5 keeps them in rope_parameters; older files use rope_scaling, and the
    top-level theta_key / fraction_key (rope_theta and partial_rotary_factor for Llama, Mistral
    and Mixtral; rotary_emb_base and rotary_pct for GPT-NeoX). A rope_scaling dict replaces
    rope_parameters, as in transformers. Any RoPE type but "default" (a long-context
    extension), and a value the family's code would ignore, are refused by name.
    """
    model_type = hf["model_type"]
    rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    given = [key for key in ("rope_scaling", "rope_parameters") if hf.get(key)]
    if len(given) == 2 and hf["rope_scaling"] != hf["rope_parameters"]:
        raise ValueError(
            f"{model_type} config.json gives both rope_scaling and rope_parameters, and they "
            "differ; keep one"
        )
    if not isinstance(rope, dict) or any(isinstance(v, dict) for v in rope.values()):
        raise ValueError(
            f"{model_type} config.json's {given[0]}={rope!r} is not one flat dict of RoPE "
            "settings (per-layer RoPE is not implemented in gptlib)"
        )
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(
            f"{model_type} checkpoint uses RoPE scaling {kind!r} (a long-context "
            "extension); gptlib implements only the default RoPE"
        )
    base = rope.get("rope_theta", hf.get(theta_key, theta))
    share = rope.get("partial_rotary_factor", hf.get(fraction_key, fraction))
    # The other family's spellings: transformers' code for this family does not read them.
    for key, used in (("rope_theta", base), ("rotary_emb_base", base),
                      ("partial_rotary_factor", share), ("rotary_pct", share)):  # fmt: skip
        if key not in (theta_key, fraction_key) and key in hf and hf[key] != used:
            raise ValueError(
                f"{model_type} config.json sets {key}={hf[key]!r}, which transformers' "
                f"{model_type} code ignores (it uses {used!r}); remove it or move it into "
                "rope_parameters"
            )
    return float(base), float(share)


def _rotary_fraction(rotary_dim: int, head_dim: int) -> float:
    """A fraction whose rotated width, int(head_dim * fraction), is exactly rotary_dim."""
    fraction = rotary_dim / head_dim
    return fraction if int(head_dim * fraction) == rotary_dim else (rotary_dim + 0.5) / head_dim


def _bool(hf: dict[str, Any], key: str, default: bool) -> bool:
    value = hf.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(
            f"{hf['model_type']} config.json sets {key}={value!r}; expected true or false"
        )
    return value


def _tied(hf: dict[str, Any], default: bool) -> bool:
    return _bool(hf, "tie_word_embeddings", default)


def resolve_aliases(hf: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """config.json with transformers' attribute_map aliases (e.g. gpt2's hidden_size for n_embd)
    replaced by the field they stand for; refuses an alias that contradicts its field."""
    hf = dict(hf)
    for alias, name in aliases.items():
        if alias in hf:
            value = hf.pop(alias)
            if hf.get(name, value) != value:
                raise ValueError(
                    f"{hf['model_type']} config.json gives {name}={hf[name]!r} and its alias "
                    f"{alias}={value!r}; keep one"
                )
            hf[name] = value
    return hf


def _gpt2_config(hf: dict[str, Any]) -> dict[str, Any]:
    # reorder_and_upcast_attn computes q·k and the softmax in float32 in a half-precision
    # model: a float32 load computes the same numbers, so it is accepted.
    _refuse(hf, "scale_attn_by_inverse_layer_idx", (False,), "attention scaled by 1/(layer+1)")
    return dict(
        _sizes(hf, GPT2_SIZES, "layer_norm_epsilon", 1e-5),
        d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        activation=_activation(hf, "activation_function", "gelu_new"),
        attention_scale=_bool(hf, "scale_attn_weights", True),
        tie_embeddings=_tied(hf, True),
    )


def _openai_config(hf: dict[str, Any]) -> dict[str, Any]:
    # transformers' GPT-1 knows four names (its ACT_FNS) and maps afn="gelu" to the tanh
    # approximation, as OpenAI's code did.
    table = {"gelu": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
    return dict(
        _sizes(hf, GPT2_SIZES, "layer_norm_epsilon", 1e-5),
        d_ff=4 * hf["n_embd"],
        activation=_activation(hf, "afn", "gelu", table),
        tie_embeddings=_tied(hf, True),
    )


def _neo_config(hf: dict[str, Any]) -> dict[str, Any]:
    sizes = _sizes(hf, NEO_SIZES, "layer_norm_epsilon", 1e-5)
    # transformers expands attention_types (default 12 x [global, local]) into attention_layers,
    # replacing any attention_layers the file holds.
    types = hf.get("attention_types") or [[["global", "local"], 12]]
    try:
        kinds = [kind for group, repeats in types for _ in range(repeats) for kind in group]
    except (TypeError, ValueError):
        raise ValueError(
            f"gpt_neo config.json's attention_types={types!r} is not a list of "
            "[[kinds...], repeats] pairs"
        ) from None
    if hf.get("attention_layers") not in (None, kinds):
        raise ValueError(
            f"gpt_neo config.json's attention_layers {hf['attention_layers']} disagree with its "
            f"attention_types {types} (which transformers uses); make them agree"
        )
    if len(kinds) != hf["num_layers"] or set(kinds) - {"global", "local"}:
        raise ValueError(
            f"gpt_neo checkpoint's attention layers {kinds} are not 'global' or "
            f"'local' for each of num_layers={hf['num_layers']}"
        )
    layouts = ["local" if kind == "local" else "dense" for kind in kinds]
    period = next(
        p
        for p in range(1, len(layouts) + 1)  # ("dense", "local"), not 24 entries
        if all(layouts[i] == layouts[i % p] for i in range(len(layouts)))
    )
    return dict(
        sizes,
        d_ff=hf.get("intermediate_size") or 4 * hf["hidden_size"],
        activation=_activation(hf, "activation_function", "gelu_new"),
        attention_pattern=tuple(layouts[:period]),
        window_size=hf.get("window_size", 256) if "local" in layouts else None,
        tie_embeddings=_tied(hf, True),
    )


def _gptj_config(hf: dict[str, Any]) -> dict[str, Any]:
    sizes = _sizes(hf, GPT2_SIZES, "layer_norm_epsilon", 1e-5)
    head_dim = hf["n_embd"] // hf["n_head"]
    rotary_dim = hf.get("rotary_dim", 64)  # transformers' GPTJConfig default
    if rotary_dim is None and hf["n_head"] == 1:
        rotary_dim = head_dim  # transformers rotates all n_embd dims; one head has them all
    if not isinstance(rotary_dim, int) or not 2 <= rotary_dim <= head_dim or rotary_dim % 2:
        raise ValueError(
            f"gptj config.json sets rotary_dim={rotary_dim!r}; it must be an even number of "
            f"dimensions from 2 to head_dim={head_dim}"
        )
    return dict(
        sizes,
        d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        activation=_activation(hf, "activation_function", "gelu_new"),
        rotary_fraction=_rotary_fraction(rotary_dim, head_dim),
        tie_embeddings=_tied(hf, False),
    )


def _neox_config(hf: dict[str, Any]) -> dict[str, Any]:
    sizes = _sizes(hf, LLAMA_SIZES, "layer_norm_eps", 1e-5)
    head_dim = _head_dim(hf, hf["hidden_size"], hf["num_attention_heads"])
    base, fraction = _rope(hf, "rotary_emb_base", "rotary_pct", 10000.0, 0.25)
    bias = _bool(hf, "attention_bias", True)
    return dict(
        sizes,
        d_ff=_size(hf, "intermediate_size"),
        activation=_activation(hf, "hidden_act", "gelu"),
        rotary_base=base,
        rotary_fraction=_rotary_fraction(int(head_dim * fraction), head_dim),
        # use_parallel_residual=False is the serial pre-LN block with two norms.
        norm_placement="parallel" if _bool(hf, "use_parallel_residual", True) else "pre",
        qkv_bias=bias,
        attn_out_bias=bias,
        tie_embeddings=_tied(hf, False),
    )


def _llama_config(hf: dict[str, Any]) -> dict[str, Any]:
    """Llama, Mistral (plus a sliding window) and Mixtral (plus experts) share one mapping.

    Defaults are each transformers class's: rms_norm_eps 1e-6 (Mixtral 1e-5), RoPE base 1e4
    (Mixtral 1e6), Mistral's sliding_window 4096. Only Llama reads attention_bias and
    mlp_bias; Mistral and Mixtral have no biases, so a file that asks for them is refused.
    """
    model_type = hf["model_type"]
    mixtral = model_type == "mixtral"
    sizes = _sizes(hf, LLAMA_SIZES, "rms_norm_eps", 1e-5 if mixtral else 1e-6)
    _head_dim(hf, hf["hidden_size"], hf["num_attention_heads"])
    base, fraction = _rope(hf, "rope_theta", "partial_rotary_factor", 1e6 if mixtral else 1e4, 1.0)
    if fraction != 1.0:
        raise ValueError(
            f"{model_type} checkpoint rotates only part of each head (partial_rotary_factor="
            f"{fraction}); transformers' {model_type} code rotates every dimension regardless, "
            "so gptlib refuses it rather than guess"
        )
    if model_type == "llama":
        _refuse(hf, "sliding_window", (None,), "a window that transformers' Llama ignores")
        bias, mlp_bias = _bool(hf, "attention_bias", False), _bool(hf, "mlp_bias", False)
        window = None
    else:
        for name in ("attention_bias", "mlp_bias"):
            _refuse(hf, name, (False,), f"biases, which transformers' {model_type} lacks")
        bias = mlp_bias = False
        window = hf.get("sliding_window", None if mixtral else 4096)
    config = dict(
        sizes,
        n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        d_ff=_size(hf, "intermediate_size"),
        activation=_activation(hf, "hidden_act", "silu"),
        rotary_base=base,
        qkv_bias=bias,
        attn_out_bias=bias,
        mlp_bias=mlp_bias,
        tie_embeddings=_tied(hf, False),
        attention_pattern=("local",) if window else ("dense",),
        window_size=window or None,
    )
    if mixtral:
        config.update(
            n_experts=hf.get("num_local_experts", 8),
            n_experts_per_token=hf.get("num_experts_per_tok", 2),
        )
    return config


# ------------------------------------------------------------------------------ weights
class Checkpoint:
    """A checkpoint's tensors; `take` hands each out once, so leftovers can be reported."""

    def __init__(self, tensors: dict[str, torch.Tensor], model_type: str, prefix: str) -> None:
        self.model_type = model_type
        # A base-model checkpoint (e.g. the original "gpt2") lacks the "transformer." prefix.
        if not any(name.startswith(prefix) for name in tensors):
            tensors = {prefix + name: t for name, t in tensors.items()}
        self.tensors = dict(tensors)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise KeyError(
                f"{self.model_type} checkpoint has no tensor {name!r}; is the file "
                "complete, and is config.json's model_type right?"
            )
        return self.tensors.pop(name)

    def leftovers(self) -> list[str]:
        return sorted(name for name in self.tensors if not IGNORED_TENSORS.search(name))

    def recomputed(self) -> list[str]:
        """The saved buffers that gptlib recomputes (see IGNORED_TENSORS)."""
        return sorted(name for name in self.tensors if IGNORED_TENSORS.search(name))


# A filler moves checkpoint tensors `theirs` into our module `ours`; `wanted` is our model's
# state dict keys, so a bias is taken exactly when our module has one.
Filler = Callable[[Checkpoint, Any, str, set, GPTConfig], dict[str, torch.Tensor]]


def _copy(ckpt: Checkpoint, theirs: str, ours: str, wanted: set, cfg: GPTConfig) -> dict:
    kinds = [kind for kind in ("weight", "bias") if f"{ours}.{kind}" in wanted]
    return {f"{ours}.{kind}": ckpt.take(f"{theirs}.{kind}") for kind in kinds}


def _conv1d(ckpt: Checkpoint, theirs: str, ours: str, wanted: set, cfg: GPTConfig) -> dict:
    """GPT-1/GPT-2 store linear layers as Conv1D, weight (in, out): transpose it."""
    state = _copy(ckpt, theirs, ours, wanted, cfg)
    state[f"{ours}.weight"] = state[f"{ours}.weight"].t()
    return state


def _concat(ckpt: Checkpoint, theirs: tuple, ours: str, wanted: set, cfg: GPTConfig) -> dict:
    """Separate q, k, v projections stacked into our fused [q heads | k heads | v heads]."""
    parts = [_copy(ckpt, name, ours, wanted, cfg) for name in theirs]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _neox_qkv(ckpt: Checkpoint, theirs: str, ours: str, wanted: set, cfg: GPTConfig) -> dict:
    """NeoX fuses q, k, v head by head, rows [h0: q k v | h1: q k v | ...]; regroup them."""
    state = _copy(ckpt, theirs, ours, wanted, cfg)
    for key, fused in state.items():
        per_head = fused.reshape(cfg.n_head, 3, cfg.head_dim, *fused.shape[1:])
        state[key] = per_head.transpose(0, 1).reshape(fused.shape)
    return state


def _experts(ckpt: Checkpoint, moe: str, ours: str, wanted: set, cfg: GPTConfig) -> dict:
    """Mixtral's router and experts, as saved (experts.{e}.w1/w2/w3) or fused as transformers
    5 holds them in memory (mlp.experts.gate_up_proj (E, 2·d_ff, d), down_proj (E, d, d_ff))."""
    fused = moe.replace("block_sparse_moe", "mlp")
    if ckpt.has(f"{fused}.experts.gate_up_proj"):
        gate_up, down = (ckpt.take(f"{fused}.experts.{n}") for n in ("gate_up_proj", "down_proj"))
        state = {f"{ours}.router.weight": ckpt.take(f"{fused}.gate.weight")}
        for e in range(cfg.n_experts):
            state[f"{ours}.experts.{e}.gate.weight"], state[f"{ours}.experts.{e}.up.weight"] = (
                gate_up[e].chunk(2)
            )
            state[f"{ours}.experts.{e}.fc_out.weight"] = down[e]
        return state
    state = {f"{ours}.router.weight": ckpt.take(f"{moe}.gate.weight")}
    for e in range(cfg.n_experts):  # w1: gate, w3: up, w2: down
        for mine, w in (("gate", "w1"), ("up", "w3"), ("fc_out", "w2")):
            state[f"{ours}.experts.{e}.{mine}.weight"] = ckpt.take(f"{moe}.experts.{e}.{w}.weight")
    return state


@dataclass(frozen=True)
class Family:
    """How one transformers model_type becomes a gptlib preset."""

    preset: str
    prefix: str  # where the base model's tensors live ("transformer.", "model.", ...)
    config: Callable[[dict[str, Any]], dict[str, Any]]  # config.json -> GPTConfig fields
    # our module -> (their module name(s), filler); names are relative to `prefix`, except
    # "^name", which sits at the checkpoint's top level (the output layer, outside the base
    # model). `layer` is applied to every block i, with {i} in the names.
    top: dict[str, tuple[Any, Filler]]
    layer: dict[str, tuple[Any, Filler]] = field(default_factory=dict)
    # transformers' attribute_map: other names config.json may use for a field
    aliases: dict[str, str] = field(default_factory=dict)


_GPT2_LAYER = {
    "ln_1": ("h.{i}.ln_1", _copy), "attn.qkv": ("h.{i}.attn.c_attn", _conv1d),  # already [q|k|v]
    "attn.out_proj": ("h.{i}.attn.c_proj", _conv1d), "ln_2": ("h.{i}.ln_2", _copy),
    "mlp.fc_in": ("h.{i}.mlp.c_fc", _conv1d), "mlp.fc_out": ("h.{i}.mlp.c_proj", _conv1d),
}  # fmt: skip
_NEO_LAYER = {
    "ln_1": ("h.{i}.ln_1", _copy),
    "attn.qkv": (tuple(f"h.{{i}}.attn.attention.{x}_proj" for x in "qkv"), _concat),
    "attn.out_proj": ("h.{i}.attn.attention.out_proj", _copy), "ln_2": ("h.{i}.ln_2", _copy),
    "mlp.fc_in": ("h.{i}.mlp.c_fc", _copy), "mlp.fc_out": ("h.{i}.mlp.c_proj", _copy),
}  # fmt: skip
_GPTJ_LAYER = {
    "ln_1": ("h.{i}.ln_1", _copy),  # GPT-J's one LN feeds attention and MLP: we have no ln_2
    "attn.qkv": (tuple(f"h.{{i}}.attn.{x}_proj" for x in "qkv"), _concat),
    "attn.out_proj": ("h.{i}.attn.out_proj", _copy),
    "mlp.fc_in": ("h.{i}.mlp.fc_in", _copy), "mlp.fc_out": ("h.{i}.mlp.fc_out", _copy),
}  # fmt: skip
_NEOX_LAYER = {
    "ln_1": ("layers.{i}.input_layernorm", _copy),
    "ln_2": ("layers.{i}.post_attention_layernorm", _copy),
    "attn.qkv": ("layers.{i}.attention.query_key_value", _neox_qkv),
    "attn.out_proj": ("layers.{i}.attention.dense", _copy),
    "mlp.fc_in": ("layers.{i}.mlp.dense_h_to_4h", _copy),
    "mlp.fc_out": ("layers.{i}.mlp.dense_4h_to_h", _copy),
}  # fmt: skip
_LLAMA_LAYER = {
    "ln_1": ("layers.{i}.input_layernorm", _copy),
    "attn.qkv": (tuple(f"layers.{{i}}.self_attn.{x}_proj" for x in "qkv"), _concat),
    "attn.out_proj": ("layers.{i}.self_attn.o_proj", _copy),
    "ln_2": ("layers.{i}.post_attention_layernorm", _copy),
    "mlp.gate": ("layers.{i}.mlp.gate_proj", _copy), "mlp.up": ("layers.{i}.mlp.up_proj", _copy),
    "mlp.fc_out": ("layers.{i}.mlp.down_proj", _copy),
}  # fmt: skip
_MIXTRAL_LAYER = {name: spec for name, spec in _LLAMA_LAYER.items() if not name.startswith("mlp")}
_MIXTRAL_LAYER["mlp"] = ("layers.{i}.block_sparse_moe", _experts)
_LLAMA_TOP = {
    "tok_emb": ("embed_tokens", _copy),
    "ln_f": ("norm", _copy),
    "lm_head": ("^lm_head", _copy),
}
_GPT2_TOP = {
    "tok_emb": ("wte", _copy),
    "pos_emb": ("wpe", _copy),
    "ln_f": ("ln_f", _copy),
    "lm_head": ("^lm_head", _copy),  # stored only when tie_word_embeddings is false
}
# transformers' attribute_map of GPT-1, GPT-2 and GPT-J: the common names of their fields.
_GPT2_ALIASES = {"max_position_embeddings": "n_positions", "hidden_size": "n_embd",
                 "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}  # fmt: skip

FAMILIES: dict[str, Family] = {
    "openai-gpt": Family("gpt1", "transformer.", _openai_config, {
        "tok_emb": ("tokens_embed", _copy), "pos_emb": ("positions_embed", _copy),
        "lm_head": ("^lm_head", _copy)}, _GPT2_LAYER, _GPT2_ALIASES),
    "gpt2": Family("gpt2", "transformer.", _gpt2_config, _GPT2_TOP, _GPT2_LAYER, _GPT2_ALIASES),
    "gpt_neo": Family("gpt-neo", "transformer.", _neo_config, _GPT2_TOP, _NEO_LAYER,
        {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}),
    "gptj": Family("gpt-j", "transformer.", _gptj_config, {
        "tok_emb": ("wte", _copy), "ln_f": ("ln_f", _copy), "lm_head": ("^lm_head", _copy)},
        _GPTJ_LAYER, _GPT2_ALIASES),
    "gpt_neox": Family("gpt-neox", "gpt_neox.", _neox_config, {
        "tok_emb": ("embed_in", _copy), "ln_f": ("final_layer_norm", _copy),
        "lm_head": ("^embed_out", _copy)}, _NEOX_LAYER),
    "llama": Family("llama", "model.", _llama_config, _LLAMA_TOP, _LLAMA_LAYER),
    "mistral": Family("llama", "model.", _llama_config, _LLAMA_TOP, _LLAMA_LAYER),
    "mixtral": Family("mixtral", "model.", _llama_config, _LLAMA_TOP, _MIXTRAL_LAYER,
        {"num_experts": "num_local_experts"}),
}  # fmt: skip
