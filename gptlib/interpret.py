"""Measurements that say what a head does: previous-token and induction scores, copying, probes.

Taught in notebooks/15_attention_maps.ipynb.

An induction head completes a pattern it has seen earlier in the context: having seen
"A B" once, at the next "A" it attends to the "B" that followed and copies it
(Olsson et al. 2022, "In-context Learning and Induction Heads"). Random token sequences
repeated twice make the pattern the only thing a model can use: the first copy is
unpredictable, the second is predictable only by looking back at the first. Interventions on
a running model (ablation, activation patching, the logit lens) live in gptlib/interventions.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .interventions import _check_tokens, check_head, evaluating, residual_stream
from .model import GPT
from .sampling import check_integer

__all__ = [
    "copy_accuracy",
    "copy_losses",
    "copying_score",
    "diagonal_scores",
    "induction_probe",
    "induction_scores",
    "ov_circuit",
    "per_token_loss",
    "previous_token_scores",
    "repeated_random_tokens",
    "stack_attentions",
]

NO_ATTENTIONS = (
    "attentions is None: the forward pass ran without return_attention=True. Run "
    "out = model(idx, return_attention=True) and pass out.attentions"
)


def stack_attentions(
    attentions: Sequence[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """Attention weights as one float32 (n_layer, B, n_head, T, T) tensor, checking their shape.

    Taught in notebooks/15_attention_maps.ipynb. Accepts what
    `model(idx, return_attention=True).attentions` holds (n_layer tensors of shape
    (B, n_head, T, T)), one such tensor, a 5-D stack, or per-layer (n_head, T, T) maps without
    the batch axis (read as B = 1). Raises ValueError for None (a forward pass without
    return_attention=True), an empty sequence, maps of other ranks, layers of different shapes
    or maps that are not square.
    """
    if attentions is None:
        raise ValueError(NO_ATTENTIONS)
    if isinstance(attentions, torch.Tensor | np.ndarray):
        layers = list(attentions) if attentions.ndim == 5 else [attentions]
    else:
        layers = list(attentions)
    if not layers or any(a is None for a in layers):
        raise ValueError(NO_ATTENTIONS if layers else "attentions is empty: no layer to show")
    tensors = [torch.as_tensor(a).detach().float().cpu() for a in layers]
    tensors = [t[None] if t.dim() == 3 else t for t in tensors]
    if any(t.dim() != 4 for t in tensors):
        raise ValueError(
            "attentions must be one (batch, n_head, T, T) tensor per layer, as in "
            f"model(idx, return_attention=True).attentions; got shapes {[a.shape for a in layers]}"
        )
    if len({t.shape for t in tensors}) != 1:
        raise ValueError(f"every layer must have one shape, got {[t.shape for t in tensors]}")
    if tensors[0].size(-1) != tensors[0].size(-2):
        raise ValueError(
            f"attention maps must be square (T queries x T keys), got {tuple(tensors[0].shape)}; "
            "run the model on the whole sequence without a KV cache"
        )
    return torch.stack(tensors)


def diagonal_scores(
    attentions: Sequence[torch.Tensor] | torch.Tensor, offset: int, first_query: int | None = None
) -> torch.Tensor:
    """Mean attention from each query q to key q - offset, per layer and head: (n_layer, n_head).

    Averages over the batch and over queries q >= first_query (default: offset, the first query
    that has such a key). offset=1 measures previous-token heads.
    """
    weights = stack_attentions(attentions)
    T = weights.size(-1)
    offset = check_integer("offset", offset, 0, "an integer >= 0")
    first_query = offset if first_query is None else first_query
    first_query = check_integer("first_query", first_query, 0, "an integer >= 0")
    if not 0 <= offset <= first_query < T:
        raise ValueError(
            f"need 0 <= offset ({offset}) <= first_query ({first_query}) < sequence length ({T})"
        )
    queries = torch.arange(first_query, T)
    picked = weights[..., queries, queries - offset]  # (n_layer, B, n_head, n_queries)
    return picked.mean(dim=(1, 3))


def previous_token_scores(attentions: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Mean attention from every token to the one just before it: (n_layer, n_head).

    A score near 1 marks a previous-token head, the first half of an induction circuit.
    """
    return diagonal_scores(attentions, offset=1)


def repeated_random_tokens(
    vocab_size: int,
    seq_len: int,
    batch: int = 8,
    n_repeats: int = 2,
    generator: torch.Generator | None = None,
    candidates: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """A (batch, n_repeats * seq_len) tensor: seq_len uniform random ids, repeated n_repeats times.

    Nothing in a row predicts its first copy; every later copy is predictable from the first.
    `candidates` restricts the draw to some ids (e.g. the characters a model has seen often:
    rare ones have embeddings too poorly trained to copy).
    """
    for name, value in (("vocab_size", vocab_size), ("batch", batch)):
        check_integer(name, value, 1, "an integer >= 1")
    for name, value in (("seq_len", seq_len), ("n_repeats", n_repeats)):
        check_integer(name, value, -(2**63), "an integer >= 2")
    if seq_len < 2 or n_repeats < 2:
        raise ValueError(
            f"need seq_len >= 2 and n_repeats >= 2 to repeat a pattern, got seq_len={seq_len}, "
            f"n_repeats={n_repeats}"
        )
    if candidates is None:
        return torch.randint(0, vocab_size, (batch, seq_len), generator=generator).repeat(
            1, n_repeats
        )
    pool = torch.as_tensor(candidates, dtype=torch.long).flatten()
    if len(pool) == 0 or pool.min() < 0 or pool.max() >= vocab_size:
        raise ValueError(f"candidates must be a non-empty list of ids in [0, {vocab_size})")
    picks = torch.randint(0, len(pool), (batch, seq_len), generator=generator)
    return pool[picks].repeat(1, n_repeats)


def _check_fits(model: GPT, length: int) -> None:
    if model.config.position == "learned" and length > model.config.block_size:
        raise ValueError(
            f"repeated sequences of {length} tokens do not fit the model's block_size "
            f"{model.config.block_size}; lower seq_len or n_repeats"
        )


def _device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def _run(model: GPT, tokens: torch.Tensor, return_attention: bool = False):
    """The model's output in eval mode, without gradients."""
    _check_fits(model, tokens.size(1))
    with evaluating(model):
        return model(tokens.to(_device(model)), return_attention=return_attention)


def induction_scores(
    model: GPT,
    seq_len: int,
    batch: int = 8,
    n_repeats: int = 2,
    generator: torch.Generator | None = None,
    tokens: torch.Tensor | None = None,
    candidates: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Each head's induction score on repeated random tokens: an (n_layer, n_head) tensor.

    The score is the mean attention from a token in a later copy to the token that followed
    its previous occurrence, key position q - seq_len + 1, averaged over those queries and the
    batch (Olsson et al. 2022, "prefix matching"). Pass `tokens` (from
    `repeated_random_tokens`) to score a fixed batch; otherwise one is drawn with `generator`
    (from `candidates` only, if given).
    """
    if tokens is None:
        tokens = repeated_random_tokens(
            model.config.vocab_size, seq_len, batch, n_repeats, generator, candidates
        )
    tokens = _check_tokens(model, tokens)
    seq_len = check_integer("seq_len", seq_len, 2, "an integer >= 2")
    if tokens.size(1) < 2 * seq_len:
        raise ValueError(
            f"tokens must be (batch, n_repeats * seq_len) with n_repeats >= 2, got "
            f"{tuple(tokens.shape)} for seq_len={seq_len}"
        )
    attentions = _run(model, tokens, return_attention=True).attentions
    return diagonal_scores(attentions, offset=seq_len - 1, first_query=seq_len)


def per_token_loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting tokens[:, t + 1] from tokens[:, : t + 1]: (batch, T - 1)."""
    tokens = _check_tokens(model, tokens)
    if tokens.size(1) < 2:
        raise ValueError(f"tokens must be (batch, T) with T >= 2, got {tuple(tokens.shape)}")
    logits = _run(model, tokens[:, :-1]).logits.float()
    targets = tokens[:, 1:].to(logits.device)
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def _per_copy(values: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Mean of per-prediction values (batch, T - 1) over each copy, first token of a copy left out."""
    n_repeats = (values.size(1) + 1) // seq_len
    return torch.stack(
        [values[:, k * seq_len : (k + 1) * seq_len - 1].mean() for k in range(n_repeats)]
    )


def _check_copies(tokens: torch.Tensor, seq_len: int) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(
            f"tokens must be a (batch, T) tensor of token ids, got {type(tokens).__name__}"
        )
    seq_len = check_integer("seq_len", seq_len, 2, "an integer >= 2")
    if tokens.dim() != 2 or tokens.size(1) % seq_len:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} are not whole copies of seq_len={seq_len}"
        )


def copy_losses(model: GPT, tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Mean loss on each copy of a repeated sequence: a tensor of n_repeats values (nats).

    The first token of every copy is left out: it follows the end of the previous copy, so
    nothing predicts it. An induction head shows up as a much lower loss after the first copy.
    """
    _check_copies(tokens, seq_len)
    return _per_copy(per_token_loss(model, tokens), seq_len)


def copy_accuracy(model: GPT, tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Top-1 accuracy on each copy of a repeated sequence: n_repeats values in [0, 1].

    Counts the predictions whose most likely token is the true next one, over the same
    positions as `copy_losses`. A loss can fall while the model still guesses wrong; accuracy
    says how often the copy is actually right.
    """
    _check_copies(tokens, seq_len)
    logits = _run(model, tokens[:, :-1]).logits
    hits = (logits.argmax(-1) == tokens[:, 1:].to(logits.device)).float().cpu()
    return _per_copy(hits, seq_len)


def _head_weights(model: GPT, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W_V (head_dim, n_embd) and W_O (n_embd, head_dim) of one head."""
    layer, head = check_head(model, layer, head)
    config = model.config
    attn, hd = model.blocks[layer].attn, config.head_dim
    kv_head = head // (config.n_head // config.n_kv_head)  # GQA: the group's shared value head
    start = (config.n_head + config.n_kv_head + kv_head) * hd  # rows: [q heads | k | v]
    w_v = attn.qkv.weight[start : start + hd]
    w_o = attn.out_proj.weight[:, head * hd : (head + 1) * hd]
    return w_v.detach().float(), w_o.detach().float()


def _final_norm_linear(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """The final norm's linear part: centring (LayerNorm only) and gain; its scale is left out."""
    norm = model.ln_f
    if isinstance(norm, torch.nn.LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    weight = getattr(norm, "weight", None)
    return x if weight is None else x * weight.detach().float()


@torch.no_grad()
def _ov_factors(
    model: GPT,
    layer: int,
    head: int,
    token_ids: Sequence[int] | torch.Tensor | None,
    reference: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with a·b = the OV circuit's (n, n) matrix transposed: a (n, head_dim), b (head_dim, n)."""
    vocab = model.config.vocab_size
    ids = torch.arange(vocab) if token_ids is None else torch.as_tensor(token_ids)
    if ids.numel() and (ids.is_floating_point() or ids.dtype == torch.bool):
        raise TypeError(f"token_ids must be integer ids, got {ids.dtype} (1.5 would be read as 1)")
    ids = ids.long().flatten().to(_device(model))
    if len(ids) == 0 or ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"token_ids must be a non-empty list of ids in [0, {vocab})")
    layer, head = check_head(model, layer, head)
    w_v, w_o = _head_weights(model, layer, head)
    if reference is None:
        inputs = model.tok_emb.weight[ids].float()
    else:
        reference = reference.to(_device(model))
        stream = residual_stream(model, reference)[layer]  # what enters the layer
        missing = [int(i) for i in ids if not (reference == i).any()]
        if missing:
            raise ValueError(f"token ids {missing[:10]} never occur in the reference tokens")
        inputs = torch.stack([stream[reference == i].mean(0) for i in ids]).float()
    if model.config.norm_placement in ("pre", "parallel"):
        inputs = model.blocks[layer].ln_1(inputs).float()
    unembed = _final_norm_linear(model, w_o.T).T  # (n_embd, head_dim): W_O, then the final norm
    return model.lm_head.weight[ids].float() @ unembed, w_v @ inputs.T


def ov_circuit(
    model: GPT,
    layer: int,
    head: int,
    token_ids: Sequence[int] | torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """A head's full OV circuit: entry [s, t] is how attending to token s moves the logit of t.

    Taught in notebooks/15_attention_maps.ipynb. The (n, n) matrix, n = len(token_ids) (default:
    the whole vocabulary), is W_U · W_O · W_V · W_E restricted to those tokens (Elhage et al.
    2021, "OV circuit"), read in the direct path: the attended token's embedding goes through
    the layer's input norm (pre-LN and parallel blocks), the head's value and output matrices,
    the final norm's centring and gain (not its scale, which depends on the whole residual
    stream) and the unembedding. A copying head has a large diagonal: attending to s raises s.
    A head in a later layer reads tokens as earlier layers rewrote them: pass `reference`
    tokens (batch, T) to use, for each token s, the mean residual stream entering `layer` at
    the positions where the reference holds s, instead of s's embedding. Raises ValueError for
    a head or token id the model does not have, or a token that the reference lacks.
    """
    a, b = _ov_factors(model, layer, head, token_ids, reference)
    return (a @ b).T


def copying_score(
    model: GPT,
    layer: int,
    head: int,
    token_ids: Sequence[int] | torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> float:
    """How much a head's OV circuit copies: Re(sum of eigenvalues) / sum of |eigenvalues|.

    Taught in notebooks/15_attention_maps.ipynb. In [-1, 1]: near 1 when attending to a token
    raises that token's own logit (a copying head), near -1 when it suppresses it, near 0 for
    anything else (Elhage et al. 2021, eigenvalue analysis of OV circuits). The matrix is
    `ov_circuit(model, layer, head, token_ids, reference)` = (a·b)ᵀ; its non-zero eigenvalues
    are those of the small (head_dim, head_dim) b·a, which is what is decomposed.
    """
    a, b = _ov_factors(model, layer, head, token_ids, reference)
    eigenvalues = torch.linalg.eigvals((b @ a).double())
    magnitude = eigenvalues.abs().sum()
    return 0.0 if magnitude == 0 else float(eigenvalues.sum().real / magnitude)


@torch.no_grad()
def induction_probe(
    model: GPT,
    seq_len: int = 32,
    batch: int = 16,
    n_candidates: int = 20,
    candidates: Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """A quick check of a model's induction ability, cheap enough to run at every evaluation.

    Taught in notebooks/15_attention_maps.ipynb; `python -m gptlib.train --track induction`
    records it. One forward pass on `batch` random sequences of `seq_len` tokens said twice
    (fewer tokens if learned positions need it), drawn from `candidates`, by default the
    `n_candidates` tokens the model itself predicts most often on average (the ones it has seen
    most, whose embeddings are trained well enough to copy). Returns floats:
    induction_score and previous_token_score (the best head's, see `induction_scores`),
    first_copy_loss and second_copy_loss (nats), first_copy_accuracy and second_copy_accuracy
    (top-1). The sequences come from a private generator seeded with `seed`, so every call
    sees the same ones for the same candidates, and the global random state is untouched; the
    model's train/eval mode is restored.
    """
    seq_len = check_integer("seq_len", seq_len, 2, "an integer >= 2")
    batch = check_integer("batch", batch, 1, "an integer >= 1")
    n_candidates = check_integer("n_candidates", n_candidates, 1, "an integer >= 1")
    seed = check_integer("seed", seed, 0, "an integer >= 0")
    if model.config.position == "learned":
        seq_len = min(seq_len, model.config.block_size // 2)
    if seq_len < 2 or batch < 1 or n_candidates < 1:
        raise ValueError(
            f"need seq_len >= 2 (and a block_size of at least 4), batch >= 1 and n_candidates >= "
            f"1; got seq_len={seq_len}, batch={batch}, n_candidates={n_candidates}"
        )
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    if candidates is None:
        probe = torch.randint(0, vocab, (4, 2 * seq_len), generator=generator)
        predicted = torch.softmax(_run(model, probe).logits.float(), -1).mean(dim=(0, 1))
        candidates = predicted.topk(min(n_candidates, vocab)).indices.sort().values.cpu()
    tokens = repeated_random_tokens(vocab, seq_len, batch, 2, generator, candidates)
    out = _run(model, tokens, return_attention=True)
    logits = out.logits[:, :-1].float()
    targets = tokens[:, 1:].to(logits.device)
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").cpu()
    hits = (logits.argmax(-1) == targets).float().cpu()
    first_loss, second_loss = _per_copy(losses, seq_len).tolist()
    first_hits, second_hits = _per_copy(hits, seq_len).tolist()
    induction = diagonal_scores(out.attentions, offset=seq_len - 1, first_query=seq_len)
    return {
        "induction_score": float(induction.max()),
        "previous_token_score": float(previous_token_scores(out.attentions).max()),
        "first_copy_loss": first_loss,
        "second_copy_loss": second_loss,
        "first_copy_accuracy": first_hits,
        "second_copy_accuracy": second_hits,
    }
