"""GPT: token and position embeddings, a stack of blocks, a final norm and the language-model head.

Taught in notebooks/02_first_gpt.ipynb (using it), 07_gpt1.ipynb and 08_gpt2.ipynb (its parts).
One class serves every variant; the differences live in `GPTConfig`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import generation
from .attention import KVCache, left_padding
from .config import CONFIG_FORMAT, GPTConfig, _flag
from .layers import Block, make_norm, router_aux_loss
from .loss import cross_entropy_loss
from .positional import LearnedPositions, SinusoidalPositions
from .sampling import check_integer

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
RESIDUAL_OUTPUTS = ("attn.out_proj.weight", "fc_out.weight")  # layers that write to the residual


@dataclass
class GPTOutput:
    """What `GPT.forward` returns."""

    logits: torch.Tensor  # (B, T, vocab_size)
    # float32 mean cross-entropy over the targets that are not ignored (-100 or -1); when all
    # are ignored, a zero that keeps the autograd graph (see cross_entropy_loss)
    loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None  # n_layer x (B, n_head, T, T_keys)
    # mixture of experts: the mean load-balancing loss of its layers (gptlib.layers.router_aux_loss)
    aux_loss: torch.Tensor | None = None


POSITIONS: dict[str, Callable[[GPTConfig], nn.Module | None]] = {
    "learned": lambda c: LearnedPositions(c.block_size, c.n_embd),
    "sinusoidal": lambda c: SinusoidalPositions(c.n_embd),
    "rotary": lambda c: None,  # applied inside attention
    "alibi": lambda c: None,  # applied inside attention
    "none": lambda c: None,
}


class GPT(nn.Module):
    """A decoder-only transformer language model; `GPTConfig` decides which GPT it is."""

    # (head weight, its version, weight transposed) while generation lends one to forward
    _transposed_head: tuple[nn.Parameter, int, torch.Tensor] | None = None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(
                f"GPT takes a GPTConfig, got {type(config).__name__}; build one with "
                "GPTConfig.from_preset(name, ...) or GPTConfig(...)"
            )
        config.validate()  # a field may have been changed since the config was made
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = POSITIONS[config.position](config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = make_norm(config) if config.final_norm else nn.Identity()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if self.tok_emb.weight.device.type != "meta":  # on meta (count_params) nothing to fill
            self.apply_init()

    # ------------------------------------------------------------------ initialisation
    def apply_init(self) -> None:
        """Initialise every weight with the scheme named by config.init (see INIT_SCHEMES)."""
        INIT_SCHEMES[self.config.init](self, self.config)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        return_attention: bool = False,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
    ) -> GPTOutput:
        """Logits for every position of idx (B, T); the loss if targets are given.

        targets (B, T) are the next token of each position; -100 (PyTorch's ignore_index) or
        -1 leaves a position out of the loss; see `gptlib.loss.cross_entropy_loss`, which also
        says what an all-ignored batch gives. return_attention=True uses the explicit attention
        path and returns every layer's weights. kv_cache continues a sequence whose earlier
        tokens are already in the cache (notebooks/04_attention.ipynb). attention_mask
        (B, T_cached + T), 1 for a real token and 0 for left padding as in transformers, lets
        prompts of different lengths share a batch: each row's positions count from its first
        real token and no token attends to padding (notebooks/14_inference.ipynb); a cache
        remembers the padding of its first call. logits_to_keep=n returns the logits of the last
        n positions only (generation needs just the last one). Raises TypeError or ValueError
        for idx that is not an integer (B, T) tensor of ids in [0, vocab_size), for targets
        of another shape or dtype, for a kv_cache that is not a `KVCache` and for a
        return_attention that is not a bool. A mixture-of-experts model also returns aux_loss,
        its load-balancing loss; in training mode, loss includes config.router_aux_loss_coef
        times it (notebooks/13_gpt4_era.ipynb), while in eval mode loss is the language-model
        loss alone.
        """
        if not isinstance(idx, torch.Tensor):
            raise TypeError(
                f"idx must be a tensor of token ids, got {type(idx).__name__}; wrap a list of "
                "ids with torch.tensor([ids])"
            )
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"idx must be an integer tensor of shape (batch, time), got {tuple(idx.shape)} "
                f"{idx.dtype}; wrap a single sequence as idx[None]"
            )
        B, T = idx.shape
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got min {int(idx.min())} "
                f"max {int(idx.max())}; does the tokenizer match the model's vocab_size?"
            )
        return_attention = _flag("return_attention", return_attention)
        if kv_cache is not None and not isinstance(kv_cache, KVCache):
            raise TypeError(
                f"kv_cache must be a gptlib KVCache, got {type(kv_cache).__name__}; make one "
                "with KVCache(model.config.n_layer)"
            )
        start = kv_cache.length if kv_cache is not None else 0
        pad = None if attention_mask is None else left_padding(attention_mask, (B, start + T))
        positions = self._positions(B, T, idx.device, kv_cache, pad)
        x = self.tok_emb(idx)
        if self.config.scale_embeddings:  # Vaswani et al. 2017, §3.4
            x = x * math.sqrt(self.config.n_embd)
        if self.pos_emb is not None:  # a float32 table joins the model's dtype
            if positions.dim() == 1:
                x = x + self.pos_emb(positions).to(x.dtype)
            else:  # padding (negative positions) borrows position 0: nothing attends to it
                flat = self.pos_emb(positions.clamp(min=0).reshape(-1))
                x = x + flat.view(*positions.shape, -1).to(x.dtype)
        x = self.drop(x)
        attentions = []
        for i, block in enumerate(self.blocks):
            cache = kv_cache.layers[i] if kv_cache is not None else None
            x, weights = block(x, positions, cache, return_attention)
            attentions.append(weights)
        if kv_cache is not None:
            kv_cache.length += T
        x = self.ln_f(x)
        if logits_to_keep is not None:
            x = x[:, -check_integer("logits_to_keep", logits_to_keep, 1, "an integer >= 1") :]
        logits = self._logits(x)
        loss = None if targets is None else cross_entropy_loss(logits, targets)
        aux = router_aux_loss(self) if self.config.mlp == "moe" else None
        if loss is not None and self.training and self.config.router_aux_loss_coef:
            loss = loss + self.config.router_aux_loss_coef * aux  # Fedus et al. 2021, §2.2
        return GPTOutput(logits, loss, tuple(attentions) if return_attention else None, aux)

    def _positions(
        self,
        B: int,
        T: int,
        device: torch.device,
        kv_cache: KVCache | None = None,
        pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Positions of T new tokens: (T,), or (B, T) counted from each row's first real token.

        pad (B,) is the left padding of each row (None: none, or what kv_cache recorded).
        Padding gets negative positions, which attention treats as "not a token".
        """
        start = 0
        if kv_cache is not None:
            if kv_cache.n_layer != self.config.n_layer:
                raise ValueError(
                    f"kv_cache has {kv_cache.n_layer} layers, the model {self.config.n_layer}; "
                    "make it with KVCache(model.config.n_layer)"
                )
            start = kv_cache.length
            if pad is None and start:
                pad = kv_cache.pad
        longest = start + T - (0 if pad is None else int(pad.min()))
        if self.config.position == "learned" and longest > self.config.block_size:
            raise ValueError(
                f"sequence of length {longest} is longer than block_size="
                f"{self.config.block_size}, and learned positions stop there; crop the input to "
                "its last block_size tokens (generate does this) or use a config with rotary/ALiBi"
            )
        if kv_cache is not None:
            pad = kv_cache.reserve(B, T, pad, model=self)
        elif pad is not None and not bool(pad.any()):
            pad = None  # no row is padded
        positions = torch.arange(start, start + T, device=device)
        return positions if pad is None else positions[None, :] - pad[:, None]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head(hidden); with the transposed copy generation lends, while the weight is unchanged."""
        lent = self._transposed_head
        if lent is not None and lent[0] is self.lm_head.weight and lent[1] == lent[0]._version:
            flat = hidden.reshape(-1, hidden.size(-1))
            bias = self.lm_head.bias
            logits = flat @ lent[2] if bias is None else torch.addmm(bias, flat, lent[2])
            return logits.view(*hidden.shape[:-1], -1)
        return self.lm_head(hidden)

    # ------------------------------------------------------------------ generation
    # model.generate(idx, max_new_tokens, temperature=..., ...): the decoding loop, with the
    # KV cache, left-padded batches, stop sequences and log-probabilities, is in generation.py.
    generate = generation.generate

    # ------------------------------------------------------------------ bookkeeping
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting a tied head once; non_embedding drops token and position tables
        (Kaplan et al. 2020 count N that way)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if isinstance(self.pos_emb, LearnedPositions):
                n -= self.pos_emb.weight.numel()
        return n

    @classmethod
    def count_params(cls, config: GPTConfig, non_embedding: bool = False) -> int:
        """Parameters of GPT(config), counted on the meta device (no memory is allocated)."""
        with torch.device("meta"):
            return cls(config).num_params(non_embedding)

    def configure_optimizer(
        self,
        lr: float,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> torch.optim.AdamW:
        """AdamW that decays matrices (weights of linear layers and embeddings) but not biases or
        norm gains, as GPT-1 states ("all non bias or gain weights"); GPT-3 (Brown et al. 2020,
        Appendix B) says only "weight decay of 0.1", not which tensors it decays."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)

    # ------------------------------------------------------------------ saving and loading
    def save(self, path: str | os.PathLike) -> Path:
        """Write path/config.json and path/model.safetensors, each atomically (no pickle).

        config.json holds the GPTConfig's fields plus "format_version" (CONFIG_FORMAT) and
        "model_sha256", the sha256 of the model.safetensors written beside it, which `load`
        verifies. A tied head is stored once, as tok_emb.weight. Raises ValueError, before
        writing anything, when `load` could not read the files back: the config says tied but
        lm_head.weight no longer equals the embedding (it would be lost), or the weights no
        longer match model.config (a field edited after the model was built, layers replaced
        by `gptlib.inference.quantize_int8`).
        """
        from safetensors.torch import save

        self._check_saveable()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            name: tensor.detach().contiguous().cpu()
            for name, tensor in self.state_dict().items()
            if not (self.config.tie_embeddings and name == "lm_head.weight")
        }
        data = save(state)
        _atomic_write(path / WEIGHTS_FILE, lambda tmp: Path(tmp).write_bytes(data))
        saved = {
            "format_version": CONFIG_FORMAT,
            "model_sha256": hashlib.sha256(data).hexdigest(),
            **self.config.to_dict(),
        }
        config_text = json.dumps(saved, indent=2)
        _atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_text(config_text))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
        """Load a model written by `save` (or by `python -m gptlib.train`), in eval mode.

        Taught in notebooks/02_first_gpt.ipynb. Accepts a folder holding gptlib's config.json
        and model.safetensors. The config must have every field of its format: a file without
        "format_version" is format 1 (written before versions were recorded), and a field
        added in a later format takes the value that reproduces the older files (see
        gptlib.config.ADDED_FIELDS); any other missing field is an error that names it. From
        format 2 on, the sha256 of model.safetensors must equal the one recorded in
        config.json. Weights come back in float32 on map_location. A Hugging Face checkpoint
        folder is refused with a pointer to `GPT.from_pretrained`. Raises FileNotFoundError
        for a missing file and ValueError naming the file for anything malformed.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = Path(path)
        config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} is missing; a gptlib checkpoint folder holds {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (written by GPT.save or `python -m gptlib.train`)"
            )
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{config_path} is not valid JSON ({err}); re-save it") from err
        hf_keys = ("model_type", "architectures", "transformers_version")
        if isinstance(saved, dict) and any(key in saved for key in hf_keys):
            raise ValueError(
                f"{path} holds a Hugging Face checkpoint (model_type "
                f"{saved.get('model_type')!r}), not one written by GPT.save; load it with "
                "GPT.from_pretrained(path)"
            )
        try:
            config = GPTConfig.from_dict(saved)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_path}: {err}") from None
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"{weights_path} is missing; a gptlib checkpoint folder holds {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (written by GPT.save or `python -m gptlib.train`)"
            )
        data = weights_path.read_bytes()
        if "model_sha256" in saved or saved.get("format_version", 1) >= 2:
            recorded, actual = saved.get("model_sha256"), hashlib.sha256(data).hexdigest()
            if recorded != actual:
                raise ValueError(
                    f"{weights_path} has sha256 {actual}, but {config_path} records "
                    f"{recorded}: the weights are corrupt, or were changed after saving (or come "
                    "from another save); restore both files from the same save, or retrain"
                )
        try:
            state = load(data)
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{weights_path} is corrupt or truncated ({err}); re-save or retrain it"
            ) from err
        model = cls(config)
        if config.tie_embeddings and "tok_emb.weight" in state:
            state["lm_head.weight"] = state["tok_emb.weight"]
        problems = _mismatches(state, model.state_dict())
        if problems:
            raise ValueError(
                f"{weights_path} does not match {config_path}: "
                + "; ".join(problems[:5])
                + ("; ..." if len(problems) > 5 else "")
                + ". Were the two files written by different runs?"
            )
        model.load_state_dict(state)
        return model.to(map_location).eval()

    def _check_saveable(self) -> None:
        """Raise ValueError unless `save` writes files that `load` reads back as this model."""
        try:
            self.config.validate()
            with torch.device("meta"):  # names and shapes only, no memory
                expected = GPT(self.config).state_dict()
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"model.config is no longer valid ({err}); saving is refused"
            ) from None
        problems = _mismatches(self.state_dict(), expected)
        if problems:
            raise ValueError(
                "the model's weights no longer match model.config ("
                + "; ".join(problems[:3])
                + ("; ..." if len(problems) > 3 else "")
                + "), so GPT.load could not read the files back: was a config field changed "
                "after the model was built, or were layers replaced (quantize_int8)? Save the "
                "model that GPT(model.config) builds"
            )
        head, embedding = self.lm_head.weight, self.tok_emb.weight
        if (
            self.config.tie_embeddings
            and head is not embedding
            and not torch.equal(head, embedding)
        ):
            raise ValueError(
                "config.tie_embeddings is True, but lm_head.weight is no longer the token "
                "embedding, so saving would lose it; re-tie them (model.lm_head.weight = "
                "model.tok_emb.weight) or make the model with tie_embeddings=False"
            )

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **kwargs) -> GPT:
        """Load a Hugging Face checkpoint (a local folder, or a hub id when online).

        Taught in notebooks/A_pretrained_weights.ipynb; `gptlib.hf.load_hf_checkpoint` says
        what it accepts (keyword arguments go there). A folder written by `GPT.save` is
        refused with a pointer to `GPT.load`.
        """
        from .hf import load_hf_checkpoint

        return load_hf_checkpoint(path_or_id, **kwargs)


def _mismatches(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading into a model whose state dict is `expected`."""
    problems = [f"missing {name}" for name in expected if name not in state]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    problems += [
        f"{name} has shape {tuple(tensor.shape)}, the config needs {tuple(expected[name].shape)}"
        for name, tensor in state.items()
        if name in expected and tensor.shape != expected[name].shape
    ]
    return problems


def _atomic_write(target: Path, write: Callable[[str], object]) -> None:
    """Write to a temporary file beside target, then rename it over target in one step."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a checkpoint is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------- initialisation schemes
def _init_normal(model: GPT, config: GPTConfig, residual_std: float | None = None) -> None:
    """N(0, init_std) for every matrix and embedding, zero biases, unit norm gains."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = (
                residual_std
                if residual_std and name.endswith(RESIDUAL_OUTPUTS)
                else config.init_std
            )
            nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)


def _init_gpt2(model: GPT, config: GPTConfig) -> None:
    # GPT-2 §2.3: residual-layer weights scaled by 1/sqrt(N), N = 2 residual layers per block.
    _init_normal(model, config, residual_std=config.init_std / math.sqrt(2 * config.n_layer))


def _init_scaled(
    model: GPT,
    base_std: Callable[[str, torch.Tensor], float],
    out_std: float,
    truncate: bool,
) -> None:
    """Draw each matrix from N(0, std²), truncated at ±2·std when `truncate` (the draw is not
    rescaled, so a truncated matrix has std ≈ 0.88·std, as in haiku's TruncatedNormal)."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = out_std if name.endswith(RESIDUAL_OUTPUTS) else base_std(name, p)
            if truncate:
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
            else:
                nn.init.normal_(p, mean=0.0, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)


def _init_gptj(model: GPT, config: GPTConfig) -> None:
    # mesh-transformer-jax: embedding std 1/sqrt(n_vocab), outputs (2/L)/sqrt(d), else 1/sqrt(fan_in)
    def base(name: str, p: torch.Tensor) -> float:
        if name.startswith("tok_emb"):
            return 1 / math.sqrt(config.vocab_size)
        return 1 / math.sqrt(p.shape[1])

    _init_scaled(model, base, (2 / config.n_layer) / math.sqrt(config.n_embd), truncate=True)


def _init_neox(model: GPT, config: GPTConfig) -> None:
    # GPT-NeoX: small_init sqrt(2/(5d)) everywhere, wang_init 2/(L·sqrt(d)) on output layers;
    # gpt-neox's megatron/model/init_functions.py draws both with an untruncated normal_.
    small = math.sqrt(2 / (5 * config.n_embd))
    out = 2 / (config.n_layer * math.sqrt(config.n_embd))
    _init_scaled(model, lambda name, p: small, out, truncate=False)


INIT_SCHEMES: dict[str, Callable[[GPT, GPTConfig], None]] = {
    "normal": _init_normal,
    "gpt2": _init_gpt2,
    "gpt-j": _init_gptj,
    "gpt-neox": _init_neox,
}
