"""Interventions on a running model: silence heads, read the residual stream, patch activations.

Taught in notebooks/15_attention_maps.ipynb.

A high attention score says where a head looks, not that the model needs it. The tools here
change what flows through a model and measure the effect: zero and mean ablation of heads
(Olsson et al. 2022 ablate heads; Wang et al. 2022 use mean ablation, their "knockouts"),
the logit lens (nostalgebraist 2020: read every layer's residual stream through the final
norm and the unembedding), and activation patching (Meng et al. 2022, §2 "causal tracing";
Wang et al. 2022, "path patching"): run a corrupted input, copy one activation from a clean run, and see
how much of the clean behaviour comes back. Everything works through PyTorch hooks, which
are removed on exit; no weight is changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from .model import GPT
from .sampling import check_integer

__all__ = [
    "ablated_heads",
    "check_head",
    "direct_logit_attribution",
    "evaluating",
    "head_outputs",
    "logit_lens",
    "patch_heads",
    "patch_residual",
    "residual_stream",
]

Metric = Callable[[torch.Tensor], float | torch.Tensor]


@contextlib.contextmanager
def evaluating(model: GPT) -> Iterator[GPT]:
    """The model in eval mode without gradients inside a `with` block; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def check_head(model: GPT, layer: int, head: int) -> tuple[int, int]:
    """(layer, head) as Python ints if the model has that head (both numbered from 0).

    Raises TypeError for an index that is not an integer (a float such as 0.7 is not read as
    0) and ValueError for a head the model does not have.
    """
    config = model.config
    layer = check_integer("layer", layer, -(2**63), "an integer layer index from 0")
    head = check_integer("head", head, -(2**63), "an integer head index from 0")
    if not (0 <= layer < config.n_layer and 0 <= head < config.n_head):
        raise ValueError(
            f"no head ({layer}, {head}): the model has {config.n_layer} layers of "
            f"{config.n_head} heads, numbered from 0"
        )
    return layer, head


def _check_tokens(model: GPT, tokens: torch.Tensor, name: str = "tokens") -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        got = tuple(tokens.shape) if hasattr(tokens, "shape") else type(tokens).__name__
        raise ValueError(
            f"{name} must be a (batch, T) tensor of token ids, got {got}; wrap one sequence "
            "as torch.tensor([ids])"
        )
    if tokens.numel() == 0:
        raise ValueError(
            f"{name} of shape {tuple(tokens.shape)} hold no tokens; pass at least one sequence "
            "of at least one token (an empty batch would average to NaN)"
        )
    return tokens.to(next(model.parameters()).device)


@contextlib.contextmanager
def _hooks(register: Iterable[Callable[[], torch.utils.hooks.RemovableHandle]]) -> Iterator[None]:
    handles = []
    try:
        for add in register:
            handles.append(add())
        yield
    finally:
        for handle in handles:
            handle.remove()


def _edit_heads(model: GPT, layer: int, edit: Callable[[torch.Tensor], None]):
    """A pre-hook on layer's output projection: edit(z) changes the heads' outputs in place.

    z is (B, T, n_head, head_dim), a copy of what the heads computed; the projection then
    mixes the edited heads into the residual stream.
    """
    config = model.config

    def hook(module, args):
        z = args[0].clone().unflatten(-1, (config.n_head, config.head_dim))
        edit(z)
        return (z.flatten(-2), *args[1:])

    return lambda: model.blocks[layer].attn.out_proj.register_forward_pre_hook(hook)


@torch.no_grad()
def head_outputs(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """What every head writes before the output projection: (n_layer, B, T, n_head, head_dim).

    Taught in notebooks/15_attention_maps.ipynb. Head h of layer l contributes
    out_proj.weight[:, h·head_dim : (h + 1)·head_dim] @ z[l, b, t, h] to the residual stream.
    """
    tokens = _check_tokens(model, tokens)
    config, captured = model.config, {}

    def capture(layer: int):
        def edit(z: torch.Tensor) -> None:
            captured[layer] = z.clone()

        return _edit_heads(model, layer, edit)

    with evaluating(model), _hooks(capture(layer) for layer in range(config.n_layer)):
        model(tokens)
    return torch.stack([captured[layer] for layer in range(config.n_layer)])


@contextlib.contextmanager
def ablated_heads(
    model: GPT,
    heads: Iterable[tuple[int, int]],
    method: str = "zero",
    reference: torch.Tensor | None = None,
) -> Iterator[GPT]:
    """Silence some heads inside a `with` block; they are back on exit.

    Taught in notebooks/15_attention_maps.ipynb. `heads` holds (layer, head) pairs. "zero"
    replaces each head's output (before the output projection) by zeros: the head still
    attends but writes nothing. "mean" replaces it by its mean over every position of the
    `reference` tokens (batch, T), which removes what the head says about this input while
    keeping the constant part later layers expect (Wang et al. 2022, "knockouts"). Raises ValueError
    for a head the model does not have, an unknown method, or "mean" without reference tokens.
    """
    pairs = list(heads)
    if not all(_is_pair(pair) for pair in pairs):
        raise TypeError(
            f"heads must be a list of (layer, head) pairs, such as [(0, 1)]; got {heads!r}"
        )
    heads = [check_head(model, layer, head) for layer, head in pairs]
    if method not in ("zero", "mean"):
        raise ValueError(f"method must be 'zero' or 'mean', got {method!r}")
    if method == "mean" and reference is None:
        raise ValueError(
            "mean ablation needs reference tokens (batch, T) to average the heads over"
        )
    means = None
    if method == "mean":
        means = head_outputs(model, _check_tokens(model, reference, "reference")).mean(dim=(1, 2))
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def silence(layer: int):
        chosen = by_layer[layer]

        def edit(z: torch.Tensor) -> None:
            z[..., chosen, :] = 0.0 if means is None else means[layer, chosen].to(z.dtype)

        return _edit_heads(model, layer, edit)

    with _hooks(silence(layer) for layer in by_layer):
        yield model


def _is_pair(pair: object) -> bool:
    """Whether `pair` is two items (a tuple, list, or a row of a tensor or array), not text."""
    if isinstance(pair, str | bytes):
        return False
    try:
        return len(pair) == 2
    except TypeError:  # an int, or a 0-d tensor
        return False


def _block_input_hook(model: GPT, replace: Callable[[torch.Tensor], torch.Tensor]):
    def hook(module, args):
        return (replace(args[0]), *args[1:])

    return lambda: model.blocks[0].register_forward_pre_hook(hook)


def _block_output_hook(model: GPT, layer: int, replace: Callable[[torch.Tensor], torch.Tensor]):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        return replace(output)

    return lambda: model.blocks[layer].register_forward_hook(hook)


def _stream_hook(model: GPT, index: int, replace: Callable[[torch.Tensor], torch.Tensor]):
    """Hook stream `index`: 0 is the input of block 0, i > 0 the output of block i - 1."""
    if index == 0:
        return _block_input_hook(model, replace)
    return _block_output_hook(model, index - 1, replace)


@torch.no_grad()
def residual_stream(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """The residual stream before the first block and after each: (n_layer + 1, B, T, n_embd).

    Taught in notebooks/15_attention_maps.ipynb. Entry 0 is the embeddings (with learned or
    sinusoidal positions added), entry i the output of block i - 1; the last entry is what
    the final norm and the unembedding turn into logits.
    """
    tokens = _check_tokens(model, tokens)
    captured: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def replace(x: torch.Tensor) -> torch.Tensor:
            captured[index] = x.detach().clone()
            return x

        return _stream_hook(model, index, replace)

    with evaluating(model), _hooks(keep(i) for i in range(model.config.n_layer + 1)):
        model(tokens)
    return torch.stack([captured[i] for i in range(model.config.n_layer + 1)])


@torch.no_grad()
def logit_lens(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Logits read off the residual stream after every layer: (n_layer + 1, B, T, vocab_size).

    Taught in notebooks/15_attention_maps.ipynb. Applies the model's own final norm and
    unembedding to each entry of `residual_stream` (nostalgebraist 2020, "interpreting GPT:
    the logit lens"), so entry -1 equals the model's logits and earlier entries show what the
    model would predict if it stopped there.
    """
    stream = residual_stream(model, tokens)
    with evaluating(model):
        return model.lm_head(model.ln_f(stream))


@torch.no_grad()
def direct_logit_attribution(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """How much each head's output raises the logit of the true next token: (n_layer, n_head, B, T - 1).

    Taught in notebooks/15_attention_maps.ipynb. The final norm is linear once its scale is
    fixed, so with each position's scale taken from the run, the logits are a sum of one term
    per head (and per MLP, embedding and bias). Each head's term for the true next token,
    minus its mean over the vocabulary (softmax ignores a shift common to all logits), is
    returned (Elhage et al. 2021, "direct path"; Wang et al. 2022 use it as "direct logit
    attribution"). Needs a final LayerNorm or RMSNorm, or none.
    """
    tokens = _check_tokens(model, tokens)
    config, norm = model.config, model.ln_f
    final = residual_stream(model, tokens)[-1]
    if isinstance(norm, torch.nn.LayerNorm):
        scale = (final.float().var(-1, unbiased=False, keepdim=True) + norm.eps).rsqrt()
    elif isinstance(norm, torch.nn.Identity):
        scale = torch.ones_like(final[..., :1])
    elif hasattr(norm, "eps") and hasattr(norm, "weight"):  # RMSNorm
        scale = (final.float().pow(2).mean(-1, keepdim=True) + norm.eps).rsqrt()
    else:
        raise ValueError(f"direct logit attribution cannot linearise a {type(norm).__name__}")
    gain = getattr(norm, "weight", None)
    unembed = model.lm_head.weight.float()
    unembed = unembed - unembed.mean(0, keepdim=True)  # a logit minus the mean logit
    targets = tokens[:, 1:]
    z = head_outputs(model, tokens)[:, :, :-1]  # (n_layer, B, T - 1, n_head, head_dim)
    result = torch.zeros(config.n_layer, config.n_head, *targets.shape)
    hd = config.head_dim
    for layer in range(config.n_layer):
        w_o = model.blocks[layer].attn.out_proj.weight.float()
        for head in range(config.n_head):
            written = z[layer, :, :, head].float() @ w_o[:, head * hd : (head + 1) * hd].T
            if isinstance(norm, torch.nn.LayerNorm):
                written = written - written.mean(-1, keepdim=True)
            written = written * scale[:, :-1]
            if gain is not None:
                written = written * gain.float()
            result[layer, head] = (written * unembed[targets]).sum(-1).cpu()
    return result


def _metric_value(metric: Metric, logits: torch.Tensor) -> float:
    value = metric(logits)
    try:
        return float(value)
    except (TypeError, ValueError):
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        raise ValueError(
            f"metric must return one number for the whole batch, got {shape}; reduce it, "
            "e.g. lambda logits: logits[:, -1, token].mean()"
        ) from None


def _check_positions(positions: Sequence[int] | None, length: int) -> list[int] | None:
    """Positions as ints in [-length, length), or None (all); ValueError naming a bad one."""
    if positions is None:
        return None
    allowed = f"a position in [-{length}, {length})"
    checked = [check_integer("position", p, -length, allowed) for p in positions]
    if not checked:
        raise ValueError(
            "positions is empty, so nothing would be patched; pass some positions, or None for all"
        )
    bad = [p for p in checked if p >= length]
    if bad:
        raise ValueError(f"position {bad[0]} is outside the {length} tokens; use {allowed}")
    return checked


def _check_metric(metric: object) -> None:
    if not callable(metric):
        raise TypeError(
            f"metric must be a function of the logits (B, T, vocab_size) returning one number, "
            f"got {type(metric).__name__}"
        )


def _check_pair(
    model: GPT, clean: torch.Tensor, corrupted: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    clean, corrupted = (
        _check_tokens(model, clean, "clean"),
        _check_tokens(model, corrupted, "corrupted"),
    )
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} must have the "
            "same shape: patching swaps activations position by position"
        )
    return clean, corrupted


@torch.no_grad()
def patch_residual(
    model: GPT,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Activation patching of the residual stream: (n_layer + 1, len(positions)) metric values.

    Taught in notebooks/15_attention_maps.ipynb. For every stream index i (0: embeddings, i:
    after block i - 1) and position p, the corrupted input runs with its stream i at p replaced
    by the clean run's, and `metric(logits)` is recorded (Meng et al. 2022, §2). clean and
    corrupted are (batch, T) token tensors of one shape; positions default to all T.
    """
    clean, corrupted = _check_pair(model, clean, corrupted)
    _check_metric(metric)
    checked = _check_positions(positions, clean.size(1))
    positions = list(range(clean.size(1))) if checked is None else checked
    stream = residual_stream(model, clean)
    results = torch.zeros(model.config.n_layer + 1, len(positions))
    for index in range(model.config.n_layer + 1):
        for column, position in enumerate(positions):

            def replace(x: torch.Tensor, index=index, position=position) -> torch.Tensor:
                x = x.clone()
                x[:, position] = stream[index][:, position]
                return x

            with evaluating(model), _hooks([_stream_hook(model, index, replace)]):
                results[index, column] = _metric_value(metric, model(corrupted).logits)
    return results


@torch.no_grad()
def patch_heads(
    model: GPT,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    metric: Metric,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Activation patching of heads: an (n_layer, n_head) table of metric values.

    Taught in notebooks/15_attention_maps.ipynb. For each head, the corrupted input runs with
    that head's output (before the output projection) replaced by the clean run's at
    `positions` (default: every position), and `metric(logits)` is recorded (Wang et al. 2022
    patch heads and paths this way). A head whose patch brings the clean metric back carries what the corruption removed.
    """
    clean, corrupted = _check_pair(model, clean, corrupted)
    _check_metric(metric)
    checked = _check_positions(positions, clean.size(1))
    where = slice(None) if checked is None else checked
    clean_z = head_outputs(model, clean)
    config = model.config
    results = torch.zeros(config.n_layer, config.n_head)
    for layer in range(config.n_layer):
        for head in range(config.n_head):

            def edit(z: torch.Tensor, layer=layer, head=head) -> None:
                z[:, where, head] = clean_z[layer][:, where, head].to(z.dtype)

            with evaluating(model), _hooks([_edit_heads(model, layer, edit)]):
                results[layer, head] = _metric_value(metric, model(corrupted).logits)
    return results
