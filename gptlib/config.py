"""GPTConfig: every GPT variant in the book as one dataclass of switches, plus named presets.

Taught in notebooks/01_history.ipynb (the presets); the variant chapters use `GPTConfig.diff`
to show what changes from one model to the next. Each preset's comment cites the paper or the
reference code its figures come from; the full references are in notebooks/references.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("post", "pre", "parallel")
POSITIONS = ("learned", "sinusoidal", "rotary", "alibi", "none")
ROTARY_PAIRINGS = ("half", "interleaved")
ROTARY_SCALINGS = ("none", "linear", "ntk")  # see gptlib.positional.rotary_frequencies
ATTENTION_LAYOUTS = ("dense", "local", "strided")
MLP_TYPES = ("mlp", "swiglu", "moe")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
INIT_SCHEMES = ("normal", "gpt2", "gpt-j", "gpt-neox")

# The version of the config.json that `GPT.save` writes. Format 1 is every file written before
# versions were recorded (it has no "format_version" key); format 2 added the keys below and
# the field `scale_embeddings`; format 3 the rotary scaling and the mixture-of-experts training
# fields (`rotary_scaling`, `rotary_scaling_factor`, `capacity_factor`, `router_aux_loss_coef`).
CONFIG_FORMAT = 3
# Keys of a saved config.json that are not GPTConfig fields: the format version and the sha256
# of the model.safetensors written beside it.
FILE_KEYS = ("format_version", "model_sha256")
# Each field added after format 1: (the format that added it, the value that reproduces how
# older files were computed). Only a file older than that format may leave the field out.
ADDED_FIELDS: dict[str, tuple[int, Any]] = {
    "scale_embeddings": (2, False),
    "rotary_scaling": (3, "none"),
    "rotary_scaling_factor": (3, 1.0),
    "capacity_factor": (3, None),
    "router_aux_loss_coef": (3, 0.0),
}


# ---------------------------------------------------------------------- checks of one value
def _integer(name: str, value: Any, minimum: int = 1, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    what += " or None" if optional else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}, but {name} must be {what}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} is out of range; {name} must be {what}")
    return int(value)


def _real(name: str, value: Any, what: str, inside: Callable[[float], bool]) -> float:
    what = f"a finite number {what}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}, but {name} must be {what}")
    if not math.isfinite(value) or not inside(float(value)):
        raise ValueError(f"{name}={value!r} is out of range; {name} must be {what}")
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, np.bool_):  # a NumPy bool (e.g. read from an array) is a bool
        value = bool(value)
    if not isinstance(value, bool):
        raise TypeError(
            f"{name}={value!r} is a {type(value).__name__}, but {name} must be True or False "
            "(a bool: a string such as 'no' or a number would be read as a truth value)"
        )
    return value


def _is_count(value: Any) -> bool:
    """Whether value is a positive integer (NumPy's too), as size fields must be."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {allowed}")
    return value


# field -> check returning the normalised value (int for integers, float for numbers).
_FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    **{name: _integer for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")},
    "n_kv_head": lambda n, v: _integer(n, v, optional=True),  # None was replaced by n_head
    "d_ff": lambda n, v: _integer(n, v, optional=True),  # None was replaced by 4 * n_embd
    "norm": lambda n, v: _choice(n, v, NORMS),
    "norm_eps": lambda n, v: _real(n, v, "> 0 (such as 1e-5)", lambda x: x > 0),
    "norm_placement": lambda n, v: _choice(n, v, NORM_PLACEMENTS),
    "position": lambda n, v: _choice(n, v, POSITIONS),
    "rotary_fraction": lambda n, v: _real(n, v, "in (0, 1]", lambda x: 0 < x <= 1),
    "rotary_pairing": lambda n, v: _choice(n, v, ROTARY_PAIRINGS),
    "rotary_base": lambda n, v: _real(n, v, "> 1 (usually 10000)", lambda x: x > 1),
    "rotary_scaling": lambda n, v: _choice(n, v, ROTARY_SCALINGS),
    "rotary_scaling_factor": lambda n, v: _real(n, v, ">= 1 (1: no scaling)", lambda x: x >= 1),
    "window_size": lambda n, v: _integer(n, v, optional=True),
    "sparse_stride": lambda n, v: _integer(n, v, optional=True),
    "mlp": lambda n, v: _choice(n, v, MLP_TYPES),
    "activation": lambda n, v: _choice(n, v, ACTIVATIONS),
    "n_experts": lambda n, v: _integer(n, v, minimum=0),
    "n_experts_per_token": _integer,
    "capacity_factor": lambda n, v: (
        None if v is None else _real(n, v, "> 0 (such as 1.25) or None", lambda x: x > 0)
    ),
    "router_aux_loss_coef": lambda n, v: _real(n, v, ">= 0 (such as 0.01)", lambda x: x >= 0),
    "init": lambda n, v: _choice(n, v, INIT_SCHEMES),
    "init_std": lambda n, v: _real(n, v, "> 0 (such as 0.02)", lambda x: x > 0),
    "dropout": lambda n, v: _real(n, v, "in [0, 1)", lambda x: 0 <= x < 1),
    **{
        name: _flag
        for name in (
            "shared_norm", "final_norm", "attention_scale", "qkv_bias", "attn_out_bias",
            "mlp_bias", "lm_head_bias", "tie_embeddings", "scale_embeddings",
        )
    },
}  # fmt: skip


def _attention_pattern(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(
            f"attention_pattern={value!r} must be a list or tuple of layouts cycled over the "
            f"layers, such as ('dense',) or ('dense', 'local'); wrap a single layout: "
            f"attention_pattern=({value!r},)"
        )
    if not value:
        raise ValueError("attention_pattern is empty; use e.g. ('dense',)")
    for layout in value:
        if not isinstance(layout, str) or layout not in ATTENTION_LAYOUTS:
            raise ValueError(
                f"attention layout {layout!r} is unknown (in attention_pattern={value!r}); use "
                f"layouts from {ATTENTION_LAYOUTS}"
            )
    return tuple(value)


@dataclass
class GPTConfig:
    """The switches that turn the one `GPT` model into GPT-1, GPT-2, GPT-J, Llama, ...

    Defaults are GPT-2 small. Use `GPTConfig.from_preset(name, **overrides)` for a variant.
    Every field's type and range is checked when the config is made (and by `validate`):
    a wrong type raises TypeError, a value out of range or an unknown name ValueError, each
    naming the field, the value and what is allowed.
    """

    # sizes
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # None: same as n_head (MHA); 1: MQA; in between: GQA
    d_ff: int | None = None  # hidden width of the feed-forward network; None: 4 * n_embd
    # the block
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    shared_norm: bool = False  # parallel placement only: one norm feeds both branches (GPT-J)
    final_norm: bool = True
    # positions
    position: str = "learned"
    rotary_fraction: float = 1.0  # share of each head's dimensions that is rotated
    rotary_pairing: str = "half"  # "half": NeoX/HF-LLaMA rotate_half; "interleaved": GPT-J pairs
    rotary_base: float = 10000.0
    # Stretch the rotary frequencies for a longer context than trained: "linear" (position
    # interpolation) or "ntk" (NTK-aware base change) by rotary_scaling_factor; see
    # gptlib.positional.rotary_frequencies.
    rotary_scaling: str = "none"
    rotary_scaling_factor: float = 1.0
    # attention
    attention_pattern: tuple[str, ...] = ("dense",)  # cycled over layers: layer i uses [i % len]
    window_size: int | None = (
        None  # "local" layers: each query sees itself and window_size-1 before
    )
    sparse_stride: int | None = None  # "strided" layers: local band of this width + every stride-th
    attention_scale: bool = True  # False: raw q·k scores, as GPT-Neo does
    # feed-forward
    mlp: str = "mlp"
    activation: str = "gelu_tanh"
    n_experts: int = 0  # mlp="moe": experts per layer
    n_experts_per_token: int = 2  # mlp="moe": top-k routing
    # mlp="moe", training only: each expert takes at most capacity_factor x its even share of
    # a batch's assignments, the rest are dropped (Fedus et al. 2021, §2.2); None: no limit.
    capacity_factor: float | None = None
    # mlp="moe", training only: weight of the load-balancing loss added to GPT's loss.
    router_aux_loss_coef: float = 0.0
    # biases, head, initialisation, regularisation
    qkv_bias: bool = True
    attn_out_bias: bool = True
    mlp_bias: bool = True
    lm_head_bias: bool = False
    tie_embeddings: bool = True
    init: str = "gpt2"
    init_std: float = 0.02
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. source of a preset)
    # Multiply token embeddings by sqrt(n_embd) before positions are added (Vaswani et al.
    # 2017, §3.4), so a fixed sinusoidal table is not drowned out by small embeddings.
    scale_embeddings: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field's type and range, then the fields' consistency with each other.

        Integers and numbers are normalised to int and float (a NumPy integer is accepted);
        n_kv_head=None becomes n_head and d_ff=None becomes 4 * n_embd. Raises TypeError for a
        value of the wrong type (a string for a number, an int for a bool, a bare string for
        attention_pattern) and ValueError for a value out of range or inconsistent with
        another field; each message names the field, the value and what is allowed.
        """
        if isinstance(self.n_head, numbers.Integral) and self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if isinstance(self.n_embd, numbers.Integral) and self.d_ff is None:
            self.d_ff = 4 * self.n_embd
        for name, check in _FIELD_CHECKS.items():
            setattr(self, name, check(name, getattr(self, name)))
        self.attention_pattern = _attention_pattern(self.attention_pattern)
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra={self.extra!r} must be a dict of notes, such as {{}}")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"extra={self.extra!r} must hold only JSON values (str, numbers, lists, dicts), "
                f"since it is saved in config.json: {err}"
            ) from None
        self._check_consistency()

    def _check_consistency(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; pick n_embd a "
                f"multiple of n_head (e.g. n_embd={self.n_head * max(1, self.n_embd // self.n_head)})"
            )
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head} (each key/value head "
                "serves an equal group of query heads); use 1 (MQA), a divisor, or n_head (MHA)"
            )
        if "local" in self.attention_pattern and self.window_size is None:
            raise ValueError("'local' attention layers need window_size, a positive integer")
        if "strided" in self.attention_pattern and self.sparse_stride is None:
            raise ValueError("'strided' attention layers need sparse_stride, a positive integer")
        if self.position == "rotary" and (self.rotary_dim < 2 or self.rotary_dim % 2):
            raise ValueError(
                f"rotary_fraction={self.rotary_fraction} of head_dim={self.head_dim} gives "
                f"{self.rotary_dim} rotated dimensions; it must be an even number >= 2"
            )
        if self.mlp == "moe" and not 1 <= self.n_experts_per_token <= self.n_experts:
            raise ValueError(
                f"mlp='moe' needs 1 <= n_experts_per_token ({self.n_experts_per_token}) "
                f"<= n_experts ({self.n_experts})"
            )
        if self.shared_norm and self.norm_placement != "parallel":
            raise ValueError("shared_norm=True only makes sense with norm_placement='parallel'")
        if self.rotary_scaling != "none" and self.position != "rotary":
            raise ValueError(
                f"rotary_scaling={self.rotary_scaling!r} scales rotary positions, but "
                f"position={self.position!r}; use position='rotary' or rotary_scaling='none'"
            )
        if self.rotary_scaling == "none" and self.rotary_scaling_factor != 1:
            raise ValueError(
                f"rotary_scaling_factor={self.rotary_scaling_factor} has no effect with "
                "rotary_scaling='none'; choose rotary_scaling='linear' or 'ntk'"
            )
        if self.rotary_scaling == "ntk" and self.rotary_dim < 4:
            raise ValueError("rotary_scaling='ntk' needs at least 4 rotated dimensions per head")
        moe_only = {"capacity_factor": None, "router_aux_loss_coef": 0.0}
        for name, off in moe_only.items():
            if self.mlp != "moe" and getattr(self, name) != off:
                raise ValueError(f"{name} only applies to mlp='moe'; leave it at {off}")

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rotary_dim(self) -> int:
        """Number of dimensions of each head that rotary embedding rotates."""
        return int(self.head_dim * self.rotary_fraction)

    def layer_layout(self, layer: int) -> str:
        """The attention layout ('dense', 'local' or 'strided') of layer `layer` (0-based)."""
        return self.attention_pattern[layer % len(self.attention_pattern)]

    # ------------------------------------------------------------------ presets
    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by `from_preset`."""
        return list(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """The published configuration of a variant, with any field overridden.

        Shrinking a preset (n_head, n_embd, ...) keeps dependent fields consistent: the ratio of
        query to key/value heads and the feed-forward width relative to n_embd are kept.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {sorted(unknown)} in overrides")
        base = dict(PRESETS[name])
        n_head, n_embd = base["n_head"], base["n_embd"]
        # A dependent field is derived only from a valid integer; anything else is left for
        # validation to refuse by name.
        whole = {k for k in ("n_head", "n_embd") if _is_count(overrides.get(k))}
        if "n_head" in whole and "n_kv_head" not in overrides:
            heads_per_kv = n_head // base.get("n_kv_head", n_head)
            if overrides["n_head"] % heads_per_kv:
                raise ValueError(
                    f"preset {name!r} shares each key/value head among {heads_per_kv} query heads, "
                    f"which does not divide n_head={overrides['n_head']}; also pass n_kv_head"
                )
            base["n_kv_head"] = overrides["n_head"] // heads_per_kv
        if "n_embd" in whole and "d_ff" not in overrides and "d_ff" in base:
            base["d_ff"] = round(base["d_ff"] * overrides["n_embd"] / n_embd)
        base.update(overrides)
        base.setdefault("extra", {})
        base["extra"] = {"preset": name, **base["extra"]}
        return cls(**base)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attention_pattern"] = list(self.attention_pattern)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """The config stored in a dict: `to_dict`'s output, or a saved config.json.

        A dict without "format_version" is format 1 (every config.json written before versions
        were recorded); "model_sha256" is skipped (GPT.load checks it). Every field must be
        present, except a field added in a later format than the dict's (see ADDED_FIELDS),
        which takes the value that reproduces the older format. Raises ValueError naming each
        missing or unknown field, or a version newer than this gptlib reads.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a GPTConfig is read from a dict of fields, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"format_version={version!r} must be an integer >= 1")
        if version > CONFIG_FORMAT:
            raise ValueError(
                f"the config is format {version}, newer than this gptlib reads ({CONFIG_FORMAT}); "
                "upgrade gptlib to load it"
            )
        d.pop("model_sha256", None)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(
                f"config has unknown field(s) {sorted(unknown)}; was it written by a newer gptlib?"
            )
        missing = []
        for name in fields:
            if name in d:
                continue
            added, old_value = ADDED_FIELDS.get(name, (1, None))
            if version < added:
                d[name] = old_value  # the field did not exist yet: this is how the file computed
            else:
                missing.append(name)
        if missing:
            raise ValueError(
                f"config (format {version}) has no field(s) {missing}; every field of format "
                f"{version} must be present, none is defaulted. Restore the field(s) from the "
                "run that wrote the weights"
            )
        return cls(**d)

    def diff(self, other: GPTConfig) -> list[tuple[str, Any, Any]]:
        """Rows (field, this value, other value) for every field that differs (not `extra`).

        Raises TypeError if other is not a GPTConfig (a dict: `GPTConfig.from_dict(d)` first).
        """
        if not isinstance(other, GPTConfig):
            raise TypeError(
                f"diff compares two GPTConfigs, got {type(other).__name__}; for a dict of "
                "fields use config.diff(GPTConfig.from_dict(d))"
            )
        rows = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name != "extra" and a != b:
                rows.append((f.name, a, b))
        return rows


def swiglu_hidden(n_embd: int, multiple_of: int = 256) -> int:
    """LLaMA's SwiGLU width: 2/3 of 4·d, rounded up to a multiple (4096 -> 11008)."""
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


_GPT2 = dict(
    vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
    norm_placement="pre", position="learned", activation="gelu_tanh", init="gpt2",
)  # fmt: skip

# Each preset is the smallest published size of the family, unless a comment says otherwise.
PRESETS: dict[str, dict[str, Any]] = {
    # GPT-1: post-LN, no final LN, N(0, 0.02) init, 512 context, 40,478-entry vocabulary
    # [Radford et al. 2018 §4.1; HF configuration_openai.py]. Its GELU is the tanh approximation
    # (`gelu` in openai/finetune-transformer-lm train.py; transformers maps afn="gelu" to it too).
    "gpt1": dict(
        _GPT2, vocab_size=40478, block_size=512, norm_placement="post", final_norm=False,
        activation="gelu_tanh", init="normal",
    ),
    # GPT-2 small, "124M": pre-LN, final LN, tanh GELU, residual init 0.02/sqrt(2L)
    # [Radford et al. 2019 §2.3; openai/gpt-2 model_card.md].
    "gpt2": dict(_GPT2),
    # GPT-3 Small (125M): GPT-2 plus "alternating dense and locally banded sparse attention
    # patterns", 2048 context [Brown et al. 2020 §2.1, Table 2.1]. RECONSTRUCTION: the paper
    # gives no band width, no stride, and not which layers are sparse. Here even layers are
    # dense and odd layers "strided": a 128-wide local band plus every 128th earlier token, the
    # strided pattern of the Sparse Transformer that §2.1 points to [Child et al. 2019].
    # The band is the paper's "locally banded"; the strided part is an extra choice of this
    # reconstruction. GPT3_LOCALLY_BANDED (below) overrides it with the purely local reading.
    "gpt3": dict(
        _GPT2, block_size=2048, attention_pattern=("dense", "strided"), sparse_stride=128,
    ),
    # GPT-Neo 125M: global and local layers alternate (layer 0 global), window 256, no
    # 1/sqrt(d_head) scaling, no q/k/v bias [HF modeling_gpt_neo.py; hub config.json].
    "gpt-neo": dict(
        _GPT2, block_size=2048, attention_pattern=("dense", "local"), window_size=256,
        attention_scale=False, qkv_bias=False,
    ),
    # GPT-J-6B: parallel attention+MLP fed by one shared LN; rotary on 64 of 256 dims per head
    # with interleaved pairs; no attention biases; untied head with bias; vocab padded to 50,400
    # [kingoflolz/mesh-transformer-jax README and 6B_roto_256.json].
    "gpt-j": dict(
        vocab_size=50400, block_size=2048, n_layer=28, n_head=16, n_embd=4096,
        norm_placement="parallel", shared_norm=True, position="rotary", rotary_fraction=0.25,
        rotary_pairing="interleaved", qkv_bias=False, attn_out_bias=False, lm_head_bias=True,
        tie_embeddings=False, activation="gelu_tanh", init="gpt-j",
    ),
    # GPT-NeoX-20B: parallel residual with two LNs, rotary on 25% of dims, half-split pairs,
    # untied, vocab padded to 50,432 [EleutherAI/gpt-neox configs/20B.yml; Black et al. 2022].
    "gpt-neox": dict(
        vocab_size=50432, block_size=2048, n_layer=44, n_head=64, n_embd=6144,
        norm_placement="parallel", position="rotary", rotary_fraction=0.25,
        rotary_pairing="half", tie_embeddings=False, activation="gelu_tanh", init="gpt-neox",
    ),
    # LLaMA-7B: pre-RMSNorm, SwiGLU with hidden 2/3·4d rounded to 256 (11,008), RoPE on every
    # dimension, no biases, untied [Touvron et al. 2023 §2.2, Table 2; HF configuration_llama.py].
    # LLaMA-1 uses one key/value head per query head; set n_kv_head for grouped-query attention.
    "llama": dict(
        vocab_size=32000, block_size=2048, n_layer=32, n_head=32, n_embd=4096,
        d_ff=swiglu_hidden(4096), norm="rmsnorm", norm_eps=1e-6, position="rotary", mlp="swiglu",
        activation="silu", init="normal",
        qkv_bias=False, attn_out_bias=False, mlp_bias=False, tie_embeddings=False,
    ),
    # Mixtral 8x7B: the Mistral-7B backbone (32 query / 8 key-value heads, hidden 14,336,
    # RoPE theta 1e6) with 8 SwiGLU experts, top-2 routing; dense 32k context, no sliding window
    # [Jiang et al. 2024; HF configuration_mixtral.py]. Set attention_pattern=("local",) and
    # window_size for Mistral-7B's sliding window (W = 4096).
    "mixtral": dict(
        vocab_size=32000, block_size=32768, n_layer=32, n_head=32, n_kv_head=8, n_embd=4096,
        d_ff=14336, norm="rmsnorm", norm_eps=1e-5, position="rotary", rotary_base=1e6,
        mlp="moe", n_experts=8, n_experts_per_token=2, activation="silu", qkv_bias=False,
        attn_out_bias=False, mlp_bias=False, tie_embeddings=False, init="normal",
    ),
}  # fmt: skip

# The purely local reading of GPT-3's "locally banded sparse" layers [Brown et al. 2020 §2.1]:
# the odd layers see only the last 128 tokens (the preset's band without its strided part).
# GPTConfig.from_preset("gpt3", **GPT3_LOCALLY_BANDED); taught in notebooks/09_gpt3.ipynb.
GPT3_LOCALLY_BANDED: dict[str, Any] = dict(
    attention_pattern=("dense", "local"), window_size=128, sparse_stride=None
)
