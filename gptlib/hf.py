"""Load Hugging Face checkpoints of every family the book covers into gptlib's one `GPT` model.

Taught in notebooks/A_pretrained_weights.ipynb. A checkpoint is a folder with config.json and
model.safetensors (or pytorch_model.bin, read with `torch.load(weights_only=True)`, so no
pickled code runs), or a hub id when online. gptlib/hf_families.py says how each model_type's
config and tensors map onto a gptlib preset.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .hf_families import FAMILIES, Checkpoint
from .model import GPT

__all__ = [
    "FAMILIES",
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
        state["lm_head.weight"] = state["tok_emb.weight"]
        for head in ("lm_head.weight", "embed_out.weight"):  # a tied copy some files also hold
            if ckpt.has(head):
                ckpt.take(head)
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
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err


def hf_config_to_gpt(hf: dict[str, Any]) -> GPTConfig:
    """The GPTConfig of a transformers config.json: its family's preset at the file's sizes."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type {model_type!r} is not supported; gptlib loads {', '.join(FAMILIES)}"
        )
    family = FAMILIES[model_type]
    fields = dict(family.config(hf), extra={"hf_model_type": model_type})
    return GPTConfig.from_preset(family.preset, **fields)


def _weight_files(folder: Path) -> list[Path]:
    for index, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / index).is_file():  # a checkpoint sharded over several files
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(
        f"{folder} has no model.safetensors or pytorch_model.bin (nor a sharded index); save "
        "the model there with save_pretrained, or download its weights into it"
    )


def read_hf_tensors(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in `folder` (safetensors, or .bin with weights_only)."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(folder)):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is listed in the checkpoint index but missing")
        if file.suffix == ".safetensors":
            tensors.update(load_file(str(file)))
        else:  # weights_only refuses pickled code: such a file can hold only tensors
            tensors.update(torch.load(file, map_location="cpu", weights_only=True))
    return tensors


HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
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

    The cache is tried first, then the network (unless local_files_only).
    """
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.match(str(path_or_id)):
        raise FileNotFoundError(
            f"{path_or_id} is not a checkpoint folder; pass the folder that "
            "holds config.json and model.safetensors"
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

    The model comes back in eval mode, in float32 unless `dtype` is given; `dtype` converts
    the weights only, so buffers such as rotary frequencies keep float32 precision.
    """
    folder = resolve_checkpoint(path_or_id, revision, local_files_only)
    hf = read_hf_config(folder)
    config = hf_config_to_gpt(hf)
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
    model.load_state_dict(state)
    return model.eval()


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
