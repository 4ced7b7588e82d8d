"""How each Hugging Face model_type maps onto gptlib: its preset, its config fields, its tensors.

Taught in notebooks/A_pretrained_weights.ipynb; gptlib/hf.py reads the files and uses these
tables. Each `Family` names the preset, a function from config.json to `GPTConfig` fields
(in gptlib/hf_configs.py), and two small tables: for each of our modules, the checkpoint
tensors that fill it and how (copied, transposed, concatenated, regrouped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import GPTConfig
from .hf_configs import (
    gpt2_config,
    gptj_config,
    llama_config,
    neo_config,
    neox_config,
    openai_config,
)

# Buffers that older checkpoints saved beside the weights (causal masks, the fill value of
# masked scores, rotary frequencies); gptlib recomputes them, so each is checked against what
# gptlib computes in its place (gptlib.hf.check_recomputed) instead of being loaded.
IGNORED_TENSORS = re.compile(
    r"(\.attn(\.attention)?\.(masked_)?bias|\.attention\.(masked_)?bias|rotary_emb\.inv_freq)$"
)


# ------------------------------------------------------------------------------ weights
class MissingTensorError(KeyError, ValueError):
    """A tensor the config needs is not in the checkpoint (a ValueError, and a KeyError as before).

    Its message prints as written, not quoted as a raw KeyError's would be.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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
            raise MissingTensorError(
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
    "openai-gpt": Family("gpt1", "transformer.", openai_config, {
        "tok_emb": ("tokens_embed", _copy), "pos_emb": ("positions_embed", _copy),
        "lm_head": ("^lm_head", _copy)}, _GPT2_LAYER, _GPT2_ALIASES),
    "gpt2": Family("gpt2", "transformer.", gpt2_config, _GPT2_TOP, _GPT2_LAYER, _GPT2_ALIASES),
    "gpt_neo": Family("gpt-neo", "transformer.", neo_config, _GPT2_TOP, _NEO_LAYER,
        {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}),
    "gptj": Family("gpt-j", "transformer.", gptj_config, {
        "tok_emb": ("wte", _copy), "ln_f": ("ln_f", _copy), "lm_head": ("^lm_head", _copy)},
        _GPTJ_LAYER, _GPT2_ALIASES),
    "gpt_neox": Family("gpt-neox", "gpt_neox.", neox_config, {
        "tok_emb": ("embed_in", _copy), "ln_f": ("final_layer_norm", _copy),
        "lm_head": ("^embed_out", _copy)}, _NEOX_LAYER),
    "llama": Family("llama", "model.", llama_config, _LLAMA_TOP, _LLAMA_LAYER),
    "mistral": Family("llama", "model.", llama_config, _LLAMA_TOP, _LLAMA_LAYER),
    "mixtral": Family("mixtral", "model.", llama_config, _LLAMA_TOP, _MIXTRAL_LAYER,
        {"num_experts": "num_local_experts"}),
}  # fmt: skip
