"""Load Hugging Face checkpoints of every family the book covers into gptlib's one `GPT` model.

Taught in notebooks/A_pretrained_weights.ipynb. What a checkpoint may be:

- a local folder holding config.json (model_type openai-gpt, gpt2, gpt_neo, gptj, gpt_neox,
  llama, mistral or mixtral) and its weights: model.safetensors, or shards listed in
  model.safetensors.index.json, or pytorch_model.bin (or its sharded index), read with
  `torch.load(weights_only=True)` so no pickled code runs; a .bin that holds anything but
  tensors is refused;
- a hub id ("openai-community/gpt2"), read from huggingface_hub's cache, else downloaded when
  online. A string that looks like a local path (starts with "." "~" or "/", has a
  backslash, a trailing slash or more than one "/") is only ever looked for on disk.

gptlib/hf_families.py says how each model_type's tensors map onto a gptlib preset, and
gptlib/hf_configs.py how its config.json does: every config.json field that changes the
numbers is honoured or refused by name, and a stored tensor is never dropped unless it equals
the one that replaces it (a tied head, a saved causal mask or rotary frequencies).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .attention import attention_mask
from .config import GPTConfig
from .hf_configs import resolve_aliases
from .hf_families import FAMILIES, Checkpoint
from .model import GPT
from .positional import rotary_frequencies

__all__ = [
    "FAMILIES",
    "check_recomputed",
    "convert_hf_state_dict",
    "hf_config_to_gpt",
    "load_hf_checkpoint",
    "read_hf_config",
    "read_hf_tensors",
    "resolve_checkpoint",
]


def _their_names(names: Any, prefix: str, layer: int) -> Any:
    if isinstance(names, tuple):
        return tuple(_their_names(name, prefix, layer) for name in names)
    name = names.format(i=layer)
    return name[1:] if name.startswith("^") else prefix + name


def convert_hf_state_dict(
    tensors: dict[str, torch.Tensor], config: GPTConfig, model_type: str
) -> dict[str, torch.Tensor]:
    """Rename and re-lay-out a transformers state dict into gptlib's names for `config`."""
    family = FAMILIES[model_type]
    with torch.device("meta"):  # our names and shapes, without allocating memory
        wanted = set(GPT(config).state_dict())
    ckpt, state = Checkpoint(tensors, model_type, family.prefix), {}
    jobs = [(ours, spec, 0) for ours, spec in family.top.items()]
    jobs += [
        (f"blocks.{i}.{ours}", spec, i)
        for i in range(config.n_layer)
        for ours, spec in family.layer.items()
    ]
    for ours, (theirs, fill), layer in jobs:
        if not (ours == "lm_head" and config.tie_embeddings):
            state.update(
                fill(ckpt, _their_names(theirs, family.prefix, layer), ours, wanted, config)
            )
    if config.tie_embeddings:
        embedding = state["lm_head.weight"] = state["tok_emb.weight"]
        head = _their_names(family.top["lm_head"][0], family.prefix, 0)
        if ckpt.has(f"{head}.weight"):  # a copy of the tied head that some files also hold
            stored = ckpt.take(f"{head}.weight")
            if stored.shape != embedding.shape or not torch.equal(stored, embedding):
                raise ValueError(
                    f"{model_type} config.json says tie_word_embeddings=true, but the checkpoint "
                    f"holds a {head}.weight that differs from the token embedding; gptlib will "
                    "not drop it. If the head is meant to be separate, set "
                    "tie_word_embeddings to false in config.json"
                )
        if "lm_head.bias" in wanted:  # GPT-J's head keeps its own bias when tied
            state["lm_head.bias"] = ckpt.take(f"{head}.bias")
    for name in ckpt.recomputed():
        check_recomputed(name, ckpt.take(name), config, model_type)
    unused, missing = ckpt.leftovers(), sorted(wanted - set(state))
    if unused:
        raise ValueError(
            f"{model_type} checkpoint has tensors that gptlib's mapping does not use: "
            f"{unused[:4]}{' ...' if len(unused) > 4 else ''}; does config.json describe these "
            "weights (e.g. a bias it says is absent)?"
        )
    if missing:
        raise ValueError(f"the {model_type} mapping leaves {missing[:4]} unset")
    return state


def check_recomputed(name: str, tensor: torch.Tensor, config: GPTConfig, model_type: str) -> None:
    """Raise ValueError unless a buffer an older checkpoint saved equals what gptlib computes.

    A causal mask (1, 1, N, N) must be the layer's own mask (local layers: the window); a
    masked-score fill value must be <= -1e4 (exp of it is 0, as masking gives); rotary
    frequencies must be the config's (to 1e-3, as a file may hold them in float16).
    """
    found = re.search(r"\.(\d+)\.", name)
    layer = int(found.group(1)) if found else 0
    if name.endswith("masked_bias"):
        ours, same = "a fill value <= -1e4", tensor.numel() == 1 and float(tensor) <= -1e4
    elif name.endswith("inv_freq"):
        rotary = config.position == "rotary"
        freq = (
            rotary_frequencies(config.rotary_dim, config.rotary_base, config.rotary_scaling,
                               config.rotary_scaling_factor)
            if rotary
            else None
        )  # fmt: skip
        ours = f"rotary frequencies {freq.tolist()}" if rotary else "no rotary embedding"
        same = rotary and tensor.shape == freq.shape and torch.allclose(tensor.float(), freq, 1e-3)
    else:
        n = tensor.shape[-1] if tensor.dim() == 4 else 0
        layout = config.layer_layout(layer)
        ours = f"the causal mask of a {layout!r} layer"
        positions = torch.arange(n)
        mask = attention_mask(
            layout, positions, positions, config.window_size, config.sparse_stride
        )
        same = n > 0 and tensor.shape[:3] == (1, 1, n) and torch.equal(tensor[0, 0].bool(), mask)
    if not same:
        raise ValueError(
            f"{model_type} checkpoint stores {name}, which is not what gptlib computes in its "
            f"place ({ours}); config.json and the weights disagree, and gptlib will not drop it"
        )


# ------------------------------------------------------------------------------ files
def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a Hugging Face checkpoint folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; a Hugging Face checkpoint folder holds config.json plus "
            "model.safetensors or pytorch_model.bin (what save_pretrained writes)"
        )
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(hf, dict):
        raise ValueError(f"{path} holds a JSON {type(hf).__name__}, not an object of settings")
    return hf


def hf_config_to_gpt(hf: dict[str, Any]) -> GPTConfig:
    """The GPTConfig of a transformers config.json: its family's preset at the file's sizes.

    Raises ValueError naming any field that gptlib cannot reproduce (see gptlib.hf_configs),
    a missing size field, or an unsupported model_type; a config written by `GPT.save` is
    refused with a pointer to `GPT.load`.
    """
    if not isinstance(hf, dict):
        hint = "; pass config.to_dict()" if callable(getattr(hf, "to_dict", None)) else ""
        raise TypeError(
            f"hf must be the dict of a config.json (gptlib.hf.read_hf_config(folder) reads one), "
            f"got {type(hf).__name__}{hint}"
        )
    model_type = hf.get("model_type")
    if model_type is None and ("format_version" in hf or {"n_embd", "norm_placement"} <= set(hf)):
        raise ValueError(
            "this config.json was written by GPT.save (gptlib's own format, no model_type); "
            "load the folder with GPT.load(path)"
        )
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; gptlib loads {', '.join(FAMILIES)}"
        )
    family = FAMILIES[model_type]
    hf = resolve_aliases(hf, family.aliases)
    fields = dict(family.config(hf), extra={"hf_model_type": model_type})
    return GPTConfig.from_preset(family.preset, **fields)


def _shard_names(index: Path) -> list[str]:
    """The weight files a sharded checkpoint's index lists, each a plain name in its folder."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{index} is not valid JSON ({err}); download or save it again") from None
    except (KeyError, TypeError):
        raise ValueError(
            f'{index} has no "weight_map" object (tensor name -> file); download or save it again'
        ) from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}'s weight_map must be a non-empty object (tensor name -> file)")
    names = sorted(set(weight_map.values()))
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(
                f"{index} lists the weight file {name!r}, which is not a file name inside "
                f"{index.parent}; a shard must sit beside its index"
            )
    return names


def _weight_files(folder: Path) -> list[Path]:
    for index, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / index).is_file():  # a checkpoint sharded over several files
            return [folder / name for name in _shard_names(folder / index)]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(
        f"{folder} has no model.safetensors or pytorch_model.bin (nor a sharded index); save "
        "the model there with save_pretrained, or download its weights into it"
    )


def _read_bin(file: Path) -> dict[str, torch.Tensor]:
    """A pytorch_model.bin's tensors, read with weights_only=True (no pickled code runs)."""
    try:
        tensors = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        raise ValueError(
            f"{file} is a pickle that holds more than tensors"
            + (f" (it refers to {found.group(1)})" if found else "")
            + "; gptlib reads .bin files with weights_only=True and will not run pickled code. "
            "Use the checkpoint's model.safetensors instead, or convert the file with a tool "
            "you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"{file} is not a readable PyTorch weights file ({str(err).splitlines()[0]}); it is "
            "probably truncated or corrupt: download or save it again"
        ) from None
    if not isinstance(tensors, dict) or not all(
        isinstance(name, str) and isinstance(t, torch.Tensor) for name, t in tensors.items()
    ):
        raise ValueError(f"{file} does not hold a dict of named tensors (a state dict)")
    return tensors


def read_hf_tensors(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in `folder` (safetensors, or .bin with weights_only).

    Raises FileNotFoundError for a missing weight file and ValueError naming the file for a
    malformed index, a truncated or corrupt file, or a .bin that holds pickled objects.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(folder)):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is listed in the checkpoint index but missing")
        if file.suffix == ".safetensors":
            try:
                tensors.update(load_file(str(file)))
            except (SafetensorError, OSError) as err:
                raise ValueError(
                    f"{file} is not a readable safetensors file ({err}); it is probably "
                    "truncated or corrupt: download or save it again"
                ) from None
        else:
            tensors.update(_read_bin(file))
    return tensors


# A hub id is "name" or "owner/name": letters, digits, "_", "-", "." (not first, not doubled).
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")
# What to fetch from the hub: config.json plus safetensors weights (one file, or shards and
# their index), else the same for pytorch_model.bin.
WEIGHT_PATTERNS = (
    ["config.json", "model*.safetensors", "model.safetensors.index.json"],
    ["config.json", "pytorch_model*.bin", "pytorch_model.bin.index.json"],
)


def resolve_checkpoint(
    path_or_id: str | os.PathLike, revision: str | None = None, local_files_only: bool = False
) -> Path:
    """A local folder as it is; a hub id ("openai-community/gpt2") via huggingface_hub's cache.

    The cache is tried first, then the network (unless local_files_only). Only a string of the
    hub's form "name" or "owner/name" is looked up; a Path, or a string that looks like a
    local path (starting with "." "~" or "/", with a backslash, a trailing slash or two "/"),
    is looked for on disk only ("~" is expanded). Raises FileNotFoundError otherwise.
    """
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise TypeError(
            "pass a checkpoint folder or a hub id as a string or Path, got "
            f"{type(path_or_id).__name__}"
        )
    if revision is not None and not isinstance(revision, str):
        raise TypeError(
            f"revision must be a branch, tag or commit hash as a string, or None; got {revision!r}"
        )
    if not isinstance(local_files_only, bool):  # "no" would be read as True
        raise TypeError(f"local_files_only must be True or False, got {local_files_only!r}")
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    is_hub_id = isinstance(path_or_id, str) and HUB_ID.match(text) and text[-1] not in ".-"
    if path.exists() or not is_hub_id:
        raise FileNotFoundError(
            f"{text} is not a checkpoint folder (and, looking like a local path, is never "
            "looked up online); pass the folder that holds config.json and model.safetensors"
        )
    errors: list[str] = []
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        errors.append("huggingface_hub is not installed")
    else:
        for offline in (True,) if local_files_only else (True, False):  # the cache, then the web
            for patterns in WEIGHT_PATTERNS:
                try:
                    folder = snapshot_download(
                        str(path_or_id),
                        revision=revision,
                        allow_patterns=patterns,
                        local_files_only=offline,
                    )
                except Exception as err:  # not cached; offline; unknown or gated repo
                    errors.append(f"{type(err).__name__}: {str(err).splitlines()[0]}")
                    if offline:
                        continue
                    break  # the network or the repo failed: other file patterns fail alike
                try:
                    _weight_files(Path(folder))
                    return Path(folder)
                except FileNotFoundError as err:  # the repo stores its weights the other way
                    errors.append(str(err))
    raise FileNotFoundError(
        f"no local folder {str(path_or_id)!r}, and the Hugging Face hub could not provide it "
        f"({errors[-1]}). Online, a hub id such as 'openai-community/gpt2' works; offline, pass "
        "a local folder holding config.json and model.safetensors (written by save_pretrained, "
        "or fetched once with `hf download <id> --local-dir <folder>`). None of the book's "
        "notebooks needs the hub."
    )


# ------------------------------------------------------------------------------ loading
def load_hf_checkpoint(
    path_or_id: str | os.PathLike,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> GPT:
    """A GPT holding a Hugging Face checkpoint's weights (a folder, or a hub id when online).

    Taught in notebooks/A_pretrained_weights.ipynb; the module docstring lists what a
    checkpoint may be. The model comes back in eval mode, in float32 unless `dtype` is given;
    `dtype` converts the weights only, so rotary frequencies and ALiBi slopes keep float32
    precision (and the softmax and the loss are computed in float32 anyway). Dropout and
    Mixtral's router jitter, which act only in training, are not carried over. Raises
    ValueError naming config.json for a field gptlib cannot reproduce or a missing size
    field, naming a weight file for a malformed or unreadable file, and naming the tensor
    for weights that do not fit the config, are not floating point or hold NaN or inf.
    Raises TypeError for a revision that is no string or a local_files_only that is no bool.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}"
        )
    folder = resolve_checkpoint(path_or_id, revision, local_files_only)
    hf = read_hf_config(folder)
    try:
        config = hf_config_to_gpt(hf)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'}: {err}") from None
    state = convert_hf_state_dict(read_hf_tensors(folder), config, hf["model_type"])
    model = GPT(config)
    if dtype is not None:
        for param in model.parameters():
            param.data = param.data.to(dtype)
    for name, ours in model.state_dict().items():
        if state[name].shape != ours.shape:
            raise ValueError(
                f"{hf['model_type']} checkpoint gives {name} the shape "
                f"{tuple(state[name].shape)}, but its config.json implies {tuple(ours.shape)}; "
                "the weights and config.json do not belong together"
            )
        _check_values(name, state[name], ours, folder)
    model.load_state_dict(state)
    return model.eval()


def _check_values(name: str, tensor: torch.Tensor, ours: torch.Tensor, folder: Path) -> None:
    """Refuse integer weights (quantized, read as plain numbers) and NaN or inf ones."""
    if not ours.is_floating_point():
        return
    if not tensor.is_floating_point():
        raise ValueError(
            f"{folder}: the checkpoint stores {name} as {tensor.dtype}, not floating point; "
            "quantized weights would be read as plain numbers. Load the unquantized checkpoint"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(
            f"{folder}: the checkpoint's {name} holds NaN or inf, so every output would be NaN; "
            "the file is damaged or was saved from a diverged run: download or save it again"
        )


def randomise_for_parity(model: torch.nn.Module) -> torch.nn.Module:
    """Fill every weight with random values that keep activations near unit scale.

    Taught in notebooks/A_pretrained_weights.ipynb. Matrices get N(0, 1/fan_in), norm gains
    N(1, 0.1) and biases N(0, 0.1): unlike a library's default initialisation (zero biases, unit
    gains), this lets a parity check catch a swapped norm or a missing bias. Returns the model in
    eval mode.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            else:
                p.normal_(1.0, 0.1)
    return model.eval()
