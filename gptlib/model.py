"""GPT: token and position embeddings, a stack of blocks, a final norm and the language-model head.

Taught in notebooks/02_first_gpt.ipynb (using it), 07_gpt1.ipynb and 08_gpt2.ipynb (its parts).
One class serves every variant; the differences live in `GPTConfig`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import generation
from .attention import KVCache, left_padding
from .config import GPTConfig
from .layers import Block, make_norm
from .positional import LearnedPositions, SinusoidalPositions
from .sampling import check_integer

WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
RESIDUAL_OUTPUTS = ("attn.out_proj.weight", "fc_out.weight")  # layers that write to the residual


@dataclass
class GPTOutput:
    """What `GPT.forward` returns."""

    logits: torch.Tensor  # (B, T, vocab_size)
    loss: torch.Tensor | None = None  # mean cross-entropy over targets that are not -1
    attentions: tuple[torch.Tensor, ...] | None = None  # n_layer x (B, n_head, T, T_keys)


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

        return_attention=True uses the explicit attention path and returns every layer's
        weights. kv_cache continues a sequence whose earlier tokens are already in the cache
        (notebooks/04_attention.ipynb). attention_mask (B, T_cached + T), 1 for a real token
        and 0 for left padding as in transformers, lets prompts of different lengths share a
        batch: each row's positions count from its first real token and no token attends to
        padding (notebooks/14_inference.ipynb); a cache remembers the padding of its first
        call. logits_to_keep=n returns the logits of the last n positions only (generation
        needs just the last one).
        """
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"idx must be an integer tensor of shape (batch, time), got {tuple(idx.shape)} "
                f"{idx.dtype}; wrap a single sequence as idx[None]"
            )
        B, T = idx.shape
        if T and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got min {int(idx.min())} "
                f"max {int(idx.max())}; does the tokenizer match the model's vocab_size?"
            )
        start = kv_cache.length if kv_cache is not None else 0
        pad = None if attention_mask is None else left_padding(attention_mask, (B, start + T))
        positions = self._positions(B, T, idx.device, kv_cache, pad)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            if positions.dim() == 1:
                x = x + self.pos_emb(positions)
            else:  # padding (negative positions) borrows position 0: nothing attends to it
                flat = self.pos_emb(positions.clamp(min=0).reshape(-1))
                x = x + flat.view(*positions.shape, -1)
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
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
        return GPTOutput(logits, loss, tuple(attentions) if return_attention else None)

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
            pad = kv_cache.reserve(B, T, pad)
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
        norm gains, as GPT-1 ("all non bias or gain weights") and GPT-3 do."""
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
        """Write path/config.json and path/model.safetensors, each atomically (no pickle)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            name: tensor.detach().contiguous().cpu()
            for name, tensor in self.state_dict().items()
            if not (self.config.tie_embeddings and name == "lm_head.weight")
        }
        _atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
        config_text = json.dumps(self.config.to_dict(), indent=2)
        _atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_text(config_text))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GPT:
        """Load a model written by `save`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} is missing; a gptlib checkpoint folder holds {CONFIG_FILE} and "
                    f"{WEIGHTS_FILE} (written by GPT.save or `python -m gptlib.train`)"
                )
        try:
            config = GPTConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path / CONFIG_FILE} is not valid JSON ({err}); re-save it") from err
        try:
            state = load_file(str(path / WEIGHTS_FILE), device=str(map_location))
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{path / WEIGHTS_FILE} is corrupt or truncated ({err}); re-save or retrain it"
            ) from err
        model = cls(config).to(map_location)
        if config.tie_embeddings:
            state["lm_head.weight"] = state["tok_emb.weight"]
        expected = model.state_dict()
        problems = [f"missing {name}" for name in expected if name not in state]
        problems += [f"unexpected {name}" for name in state if name not in expected]
        problems += [
            f"{name} has shape {tuple(tensor.shape)}, the config needs {tuple(expected[name].shape)}"
            for name, tensor in state.items()
            if name in expected and tensor.shape != expected[name].shape
        ]
        if problems:
            raise ValueError(
                f"{path / WEIGHTS_FILE} does not match {path / CONFIG_FILE}: "
                + "; ".join(problems[:5])
                + ("; ..." if len(problems) > 5 else "")
                + ". Were the two files written by different runs?"
            )
        model.load_state_dict(state)
        return model.eval()

    @classmethod
    def from_pretrained(cls, path_or_id: str, **kwargs) -> GPT:
        """Load a Hugging Face checkpoint (a local folder, or a hub id when online).

        See gptlib/hf.py and notebooks/A_pretrained_weights.ipynb.
        """
        from .hf import load_hf_checkpoint

        return load_hf_checkpoint(path_or_id, **kwargs)


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
    model: GPT, base_std: Callable[[str, torch.Tensor], float], out_std: float
) -> None:
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = out_std if name.endswith(RESIDUAL_OUTPUTS) else base_std(name, p)
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
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

    _init_scaled(model, base, (2 / config.n_layer) / math.sqrt(config.n_embd))


def _init_neox(model: GPT, config: GPTConfig) -> None:
    # GPT-NeoX: small_init sqrt(2/(5d)) everywhere, wang_init 2/(L·sqrt(d)) on output layers
    small = math.sqrt(2 / (5 * config.n_embd))
    _init_scaled(model, lambda name, p: small, 2 / (config.n_layer * math.sqrt(config.n_embd)))


INIT_SCHEMES: dict[str, Callable[[GPT, GPTConfig], None]] = {
    "normal": _init_normal,
    "gpt2": _init_gpt2,
    "gpt-j": _init_gptj,
    "gpt-neox": _init_neox,
}
