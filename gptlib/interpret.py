"""Measurements that say what a head does: previous-token heads, induction heads, copy losses.

Taught in notebooks/15_attention_maps.ipynb.

An induction head completes a pattern it has seen earlier in the context: having seen
"A B" once, at the next "A" it attends to the "B" that followed and copies it
(Olsson et al. 2022, "In-context Learning and Induction Heads"). Random token sequences
repeated twice make the pattern the only thing a model can use: the first copy is
unpredictable, the second is predictable only by looking back at the first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .model import GPT

__all__ = [
    "ablated_heads",
    "copy_losses",
    "diagonal_scores",
    "induction_scores",
    "per_token_loss",
    "previous_token_scores",
    "repeated_random_tokens",
]


def _stack(attentions: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Attention weights as one (n_layer, B, n_head, T, T) tensor, checking their shape."""
    if isinstance(attentions, torch.Tensor):
        attentions = [attentions] if attentions.dim() == 4 else list(attentions)
    if len(attentions) == 0 or any(a is None or a.dim() != 4 for a in attentions):
        raise ValueError(
            "attentions must be a sequence of (batch, n_head, T, T) tensors, one per layer, as "
            "in model(idx, return_attention=True).attentions"
        )
    stacked = torch.stack([a.detach().float() for a in attentions])
    if stacked.size(-1) != stacked.size(-2):
        raise ValueError(
            f"attention maps must be square (T queries x T keys), got {tuple(stacked.shape[-2:])};"
            " run the model on the whole sequence without a KV cache"
        )
    return stacked


def diagonal_scores(
    attentions: Sequence[torch.Tensor] | torch.Tensor, offset: int, first_query: int | None = None
) -> torch.Tensor:
    """Mean attention from each query q to key q - offset, per layer and head: (n_layer, n_head).

    Averages over the batch and over queries q >= first_query (default: offset, the first query
    that has such a key). offset=1 measures previous-token heads.
    """
    weights = _stack(attentions)
    T = weights.size(-1)
    first_query = offset if first_query is None else first_query
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
    `candidates` restricts the draw to some ids (e.g. the letters of a character vocabulary,
    whose rare symbols a small model has barely seen).
    """
    for name, value in (("vocab_size", vocab_size), ("batch", batch)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
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


@torch.no_grad()
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
    batch. Pass `tokens` (from `repeated_random_tokens`) to score a fixed batch; otherwise one
    is drawn with `generator` (from `candidates` only, if given).
    """
    if tokens is None:
        tokens = repeated_random_tokens(
            model.config.vocab_size, seq_len, batch, n_repeats, generator, candidates
        )
    if tokens.dim() != 2 or tokens.size(1) < 2 * seq_len:
        raise ValueError(
            f"tokens must be (batch, n_repeats * seq_len) with n_repeats >= 2, got "
            f"{tuple(tokens.shape)} for seq_len={seq_len}"
        )
    _check_fits(model, tokens.size(1))
    was_training = model.training
    model.eval()
    attentions = model(tokens.to(next(model.parameters()).device), return_attention=True)
    model.train(was_training)
    return diagonal_scores(attentions.attentions, offset=seq_len - 1, first_query=seq_len)


@torch.no_grad()
def per_token_loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting tokens[:, t + 1] from tokens[:, : t + 1]: (batch, T - 1)."""
    if tokens.dim() != 2 or tokens.size(1) < 2:
        raise ValueError(f"tokens must be (batch, T) with T >= 2, got {tuple(tokens.shape)}")
    _check_fits(model, tokens.size(1))
    was_training = model.training
    model.eval()
    logits = model(tokens[:, :-1]).logits.float()
    model.train(was_training)
    targets = tokens[:, 1:].to(logits.device)
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def copy_losses(model: GPT, tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Mean loss on each copy of a repeated sequence: a tensor of n_repeats values.

    The first token of every copy is left out: it follows the end of the previous copy, so
    nothing predicts it. An induction head shows up as a much lower loss after the first copy.
    """
    if tokens.size(1) % seq_len:
        raise ValueError(
            f"tokens of length {tokens.size(1)} are not whole copies of seq_len={seq_len}"
        )
    losses = per_token_loss(model, tokens)  # losses[:, t] predicts token t + 1
    n_repeats = tokens.size(1) // seq_len
    return torch.stack(
        [losses[:, k * seq_len : (k + 1) * seq_len - 1].mean() for k in range(n_repeats)]
    )


@contextlib.contextmanager
def ablated_heads(model: GPT, heads: Iterable[tuple[int, int]]) -> Iterator[GPT]:
    """Silence some heads inside a `with` block: their output no longer reaches the residual.

    `heads` holds (layer, head) pairs. Each head's columns of its layer's output projection are
    zeroed, so the head still attends but writes nothing; the weights come back on exit.
    """
    saved = []
    head_dim = model.config.head_dim
    try:
        with torch.no_grad():
            for layer, head in heads:
                if not (0 <= layer < model.config.n_layer and 0 <= head < model.config.n_head):
                    raise ValueError(
                        f"no head ({layer}, {head}): the model has {model.config.n_layer} layers "
                        f"of {model.config.n_head} heads, numbered from 0"
                    )
                weight = model.blocks[layer].attn.out_proj.weight
                columns = slice(head * head_dim, (head + 1) * head_dim)
                saved.append((weight, columns, weight[:, columns].clone()))
                weight[:, columns] = 0.0
        yield model
    finally:
        with torch.no_grad():
            for weight, columns, original in reversed(saved):
                weight[:, columns] = original
