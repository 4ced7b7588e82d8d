"""How each Hugging Face model_type's config.json becomes GPTConfig fields, field by field.

Taught in notebooks/A_pretrained_weights.ipynb; gptlib/hf_families.py names one of these
functions for each model_type. Every config.json field that changes the numbers is honoured
or refused by name: a field left out of the file takes transformers' own default for that
class (as transformers does), a size field must be present, and a value gptlib cannot
reproduce (an attention scaled per layer, a RoPE scaling other than "linear", quantized
weights, a head_dim that does not split n_embd, ...) raises ValueError naming it. Dropout and Mixtral's router jitter
act only in training and are not carried over; fields that only configure training losses,
generation or tokenizers are not read.
"""

from __future__ import annotations

from typing import Any

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


def _or_default(hf: dict[str, Any], name: str, default: Any) -> Any:
    """hf[name], or default where transformers uses it: the field absent or null (not 0)."""
    return default if hf.get(name) is None else hf[name]


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


# RoPE types of transformers that gptlib computes exactly as transformers does -> ours.
HF_ROPE_TYPES = {"default": "none", "linear": "linear"}


def _rope(
    hf: dict[str, Any], theta_key: str, fraction_key: str, theta: float, fraction: float
) -> tuple[float, float, dict[str, Any]]:
    """RoPE (base, rotated fraction, scaling fields) read as the family's transformers code does.

    transformers 5 keeps them in rope_parameters; older files use rope_scaling, and the
    top-level theta_key / fraction_key (rope_theta and partial_rotary_factor for Llama, Mistral
    and Mixtral; rotary_emb_base and rotary_pct for GPT-NeoX). A rope_scaling dict replaces
    rope_parameters, as in transformers. rope_type "linear" (position interpolation, every
    frequency divided by factor) becomes rotary_scaling="linear"; every other long-context
    type ("dynamic", "yarn", "llama3", ...) and a value the family's code would ignore are
    refused by name.
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
    if kind not in HF_ROPE_TYPES:
        raise ValueError(
            f"{model_type} checkpoint uses RoPE scaling {kind!r} (a long-context "
            f"extension); gptlib implements only the RoPE types {sorted(HF_ROPE_TYPES)}"
        )
    scaling = {"rotary_scaling": HF_ROPE_TYPES[kind], "rotary_scaling_factor": 1.0}
    if kind == "linear":
        factor = rope.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ValueError(
                f"{model_type} config.json's linear RoPE scaling has factor={factor!r}; "
                "transformers needs a number >= 1"
            )
        scaling["rotary_scaling_factor"] = float(factor)
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
    return float(base), float(share), scaling


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


def gpt2_config(hf: dict[str, Any]) -> dict[str, Any]:
    """GPT-2's fields: sizes, n_inner, activation_function, scale_attn_weights, tied head.

    scale_attn_by_inverse_layer_idx=True is refused.
    """
    # reorder_and_upcast_attn computes q·k and the softmax in float32 in a half-precision
    # model: a float32 load computes the same numbers, so it is accepted.
    _refuse(hf, "scale_attn_by_inverse_layer_idx", (False,), "attention scaled by 1/(layer+1)")
    return dict(
        _sizes(hf, GPT2_SIZES, "layer_norm_epsilon", 1e-5),
        d_ff=_or_default(hf, "n_inner", 4 * hf["n_embd"]),
        activation=_activation(hf, "activation_function", "gelu_new"),
        attention_scale=_bool(hf, "scale_attn_weights", True),
        tie_embeddings=_tied(hf, True),
    )


def openai_config(hf: dict[str, Any]) -> dict[str, Any]:
    """GPT-1's fields (model_type openai-gpt): sizes, afn, layer_norm_epsilon, tied head."""
    # transformers' GPT-1 knows four names (its ACT_FNS) and maps afn="gelu" to the tanh
    # approximation, as OpenAI's code did.
    table = {"gelu": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
    return dict(
        _sizes(hf, GPT2_SIZES, "layer_norm_epsilon", 1e-5),
        d_ff=4 * hf["n_embd"],
        activation=_activation(hf, "afn", "gelu", table),
        tie_embeddings=_tied(hf, True),
    )


def neo_config(hf: dict[str, Any]) -> dict[str, Any]:
    """GPT-Neo's fields: sizes, attention_types (global or local per layer), window_size,
    intermediate_size, tied head."""
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
        d_ff=_or_default(hf, "intermediate_size", 4 * hf["hidden_size"]),
        activation=_activation(hf, "activation_function", "gelu_new"),
        attention_pattern=tuple(layouts[:period]),
        window_size=hf.get("window_size", 256) if "local" in layouts else None,
        tie_embeddings=_tied(hf, True),
    )


def gptj_config(hf: dict[str, Any]) -> dict[str, Any]:
    """GPT-J's fields: sizes, rotary_dim (default 64), n_inner, activation_function, head."""
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
        d_ff=_or_default(hf, "n_inner", 4 * hf["n_embd"]),
        activation=_activation(hf, "activation_function", "gelu_new"),
        rotary_fraction=_rotary_fraction(rotary_dim, head_dim),
        tie_embeddings=_tied(hf, False),
    )


def neox_config(hf: dict[str, Any]) -> dict[str, Any]:
    """GPT-NeoX's fields: sizes, RoPE base and share, use_parallel_residual, attention_bias,
    tied head."""
    sizes = _sizes(hf, LLAMA_SIZES, "layer_norm_eps", 1e-5)
    head_dim = _head_dim(hf, hf["hidden_size"], hf["num_attention_heads"])
    base, fraction, scaling = _rope(hf, "rotary_emb_base", "rotary_pct", 10000.0, 0.25)
    bias = _bool(hf, "attention_bias", True)
    return dict(
        sizes,
        **scaling,
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


def llama_config(hf: dict[str, Any]) -> dict[str, Any]:
    """Llama, Mistral (plus a sliding window) and Mixtral (plus experts) share one mapping.

    Defaults are each transformers class's: rms_norm_eps 1e-6 (Mixtral 1e-5), RoPE base 1e4
    (Mixtral 1e6), Mistral's sliding_window 4096. Only Llama reads attention_bias and
    mlp_bias; Mistral and Mixtral have no biases, so a file that asks for them is refused.
    """
    model_type = hf["model_type"]
    mixtral = model_type == "mixtral"
    sizes = _sizes(hf, LLAMA_SIZES, "rms_norm_eps", 1e-5 if mixtral else 1e-6)
    _head_dim(hf, hf["hidden_size"], hf["num_attention_heads"])
    base, fraction, scaling = _rope(
        hf, "rope_theta", "partial_rotary_factor", 1e6 if mixtral else 1e4, 1.0
    )
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
        **scaling,
        n_kv_head=_or_default(hf, "num_key_value_heads", hf["num_attention_heads"]),
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
