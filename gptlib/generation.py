"""Generation: the decoding loop behind `GPT.generate`, with a KV cache, left-padded batches of
prompts of different lengths, stop sequences and the log-probability of every generated token.

Taught in notebooks/08_gpt2.ipynb (sampling) and notebooks/14_inference.ipynb (the cache and
batches). Stop sequences and log-probabilities serve the Codex chapter: it samples programs
until the end of a function and ranks them by their mean token log-probability (Chen et al.
2021, §3.3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .attention import KVCache, left_padding
from .config import _flag
from .sampling import NAN_LOGITS, _sample, check_integer, check_sampling_args
from .tokenizer_io import check_text

if TYPE_CHECKING:
    from .model import GPT

__all__ = ["Generation", "cut_at_stop", "generate", "left_pad"]
INTEGER_IDS = (torch.int64, torch.int32)
PREALLOCATED = 4096  # new tokens whose buffers generate reserves at once; more grow by doubling


@dataclass
class Generation:
    """What `GPT.generate(..., return_logprobs=True)` returns.

    ids (B, T + new) int64: the prompts and what followed, finished rows padded with
    pad_token_id. logprobs (B, new) float32: log p(token | everything before it) of each
    generated token under the model's own distribution (temperature 1, no top-k or top-p),
    0 at padding. new_lengths (B,) int64: tokens each row generated, its stop sequence or
    end-of-text token included; row b's mean log-probability is
    logprobs[b, :new_lengths[b]].mean().
    """

    ids: torch.Tensor
    logprobs: torch.Tensor
    new_lengths: torch.Tensor


def left_pad(
    sequences: Sequence[Sequence[int]],
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token-id lists of different lengths into (idx, attention_mask), padding on the left.

    Taught in notebooks/14_inference.ipynb. Both tensors are (B, longest) int64; the mask is
    1 at real tokens and 0 at padding, as transformers' tokenizers return it with
    padding_side="left". Left padding puts every row's last token in the last column, where
    generation appends. Raises ValueError for an empty list or an empty sequence.
    """
    if isinstance(sequences, (str, torch.Tensor)) or not isinstance(sequences, Sequence):
        raise TypeError(
            f"sequences must be a list of token-id lists, got {type(sequences).__name__}"
        )
    if len(sequences) == 0:
        raise ValueError("sequences is empty; give at least one list of token ids")
    pad_token_id = check_integer("pad_token_id", pad_token_id, 0, "a token id >= 0")
    rows = []
    for i, sequence in enumerate(sequences):
        if isinstance(sequence, str):
            raise TypeError(f"sequences[{i}] is a string; encode it with a tokenizer first")
        row = [check_integer(f"sequences[{i}] token", t, 0, "a token id >= 0") for t in sequence]
        if not row:
            raise ValueError(
                f"sequences[{i}] is empty; every prompt needs at least one token (a start id)"
            )
        rows.append(row)
    longest = max(len(row) for row in rows)
    idx = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        idx[i, longest - len(row) :] = torch.tensor(row)
        mask[i, longest - len(row) :] = 1
    return idx.to(device), mask.to(device)


def cut_at_stop(text: str, stop: Sequence[str] | str) -> str:
    """The part of text before the first occurrence of any stop string (all of it if none).

    For scoring generated programs in the Codex chapter: decode a row's continuation, cut it
    where the function ends, run what is left.
    """
    check_text(text, "cut_at_stop")
    stops = (
        [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, Sequence) else [None]
    )
    if not all(isinstance(s, str) and s for s in stops):
        raise TypeError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(ends)] if ends else text


class _StopSequences:
    """Checks, after every step, which rows' continuations now contain a stop sequence."""

    def __init__(self, stop: object, tokenizer: object, vocab_size: int) -> None:
        if isinstance(stop, (str, torch.Tensor)):
            stop = [stop]
        if not isinstance(stop, Sequence):
            raise TypeError(
                f"stop must be a list of stop sequences (strings or token-id lists), got {stop!r}"
            )
        self.strings: list[str] = []
        self.ids: list[torch.Tensor] = []
        for i, item in enumerate(stop):
            if isinstance(item, str):
                if not item:
                    raise ValueError(f"stop[{i}] is the empty string; give a non-empty one")
                self.strings.append(item)
                continue
            if isinstance(item, torch.Tensor):
                item = item.tolist()
            if not isinstance(item, Sequence):
                raise TypeError(
                    f"stop[{i}]={item!r} is neither a string nor a sequence of token ids; "
                    f"wrap one token-id sequence in a list: stop=[{list(stop)!r}]"
                )
            allowed = f"a token id in [0, {vocab_size})"
            ids = [check_integer(f"stop[{i}] token", t, 0, allowed) for t in item]
            if not ids:
                raise ValueError(f"stop[{i}] is an empty sequence; give at least one token id")
            if max(ids) >= vocab_size:
                raise ValueError(f"stop[{i}] holds token id {max(ids)}; it must be {allowed}")
            self.ids.append(torch.tensor(ids))
        if self.strings and not callable(getattr(tokenizer, "decode", None)):
            raise ValueError(
                f"stop strings {self.strings!r} need tokenizer= (an object with .decode(ids)); "
                "pass the tokenizer, or give stop sequences as token ids"
            )
        self.tokenizer = tokenizer
        self.continuations: list[list[int]] = []

    def __bool__(self) -> bool:
        return bool(self.strings or self.ids)

    def hits(self, ids: torch.Tensor, prompt_len: int, active: torch.Tensor) -> torch.Tensor:
        """Rows (B,) bool whose continuation ids[:, prompt_len:] now holds a stop, among active.

        Called once per step, so a stop found now ends at the newest token: the token-id
        check compares only the tail; strings need the decoded text (a stop string may span
        tokens or lie inside one).
        """
        new = ids.size(1) - prompt_len
        hit = torch.zeros_like(active)
        for sequence in self.ids:
            if len(sequence) <= new:
                tail = ids[:, ids.size(1) - len(sequence) :]
                hit |= (tail == sequence.to(ids.device)).all(dim=1)
        if self.strings:
            newest = ids[:, -1].tolist()
            if not self.continuations:
                self.continuations = [[] for _ in newest]
            for row, token in enumerate(newest):
                self.continuations[row].append(token)
            for row in active.nonzero().flatten().tolist():
                text = self.tokenizer.decode(self.continuations[row])
                if any(s in text for s in self.strings):
                    hit[row] = True
        return hit & active


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    eos_token_id: int | None = None,
    stop: Sequence[str | Sequence[int]] | str | None = None,
    tokenizer: object | None = None,
    attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None,
    return_logprobs: bool = False,
) -> torch.Tensor | Generation:
    """Extend every row of idx (B, T) by up to max_new_tokens tokens: `GPT.generate`.

    Taught in notebooks/02_first_gpt.ipynb and notebooks/08_gpt2.ipynb (sampling), and
    notebooks/14_inference.ipynb (the KV cache, batches). Returns (B, T + new) token ids;
    new = max_new_tokens, or fewer when every row finished early.

    - Sampling: temperature 0 is greedy, otherwise top_k / top_p / temperature as in
      `gptlib.sampling.sample_next`, drawing from generator (or a new one seeded with seed).
      All rows draw from one generator, so a sampled row depends on the batch it is in.
    - use_cache=True runs the prompt once and then one token per step through a `KVCache`
      allocated for T + max_new_tokens tokens; False re-reads the whole sequence each step
      (the same tokens, more work). Learned positions stop at block_size: past it, each step
      reads the last block_size tokens.
    - attention_mask (B, T), 1 real and 0 padding, for left-padded prompts of different
      lengths (`left_pad` builds it): each row's positions count from its first real token,
      and a greedy row equals that prompt generated alone.
    - A row finishes at the step its continuation (never the prompt) produces eos_token_id
      or first contains a stop sequence: a string (needs tokenizer with .decode) or a
      sequence of token ids. Later tokens of a finished row are pad_token_id (default
      eos_token_id, else 0); generation ends when every row has finished.
    - return_logprobs=True returns a `Generation` (ids, logprobs, new_lengths) instead of
      the (B, T + new) tensor; log-probabilities are the model's own. The Codex chapter uses
      stop sequences to end a sampled function and ranks samples by their mean log-probability
      (Chen et al. 2021, §3.3).

    Raises ValueError or TypeError, naming the argument, for an empty prompt, a bad sampling
    setting (see `check_sampling_args`), ids outside the vocabulary, a bad attention_mask,
    bad stop sequences, or both seed and generator.
    """
    config = model.config
    args = check_sampling_args(
        temperature,
        top_k,
        top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        vocab_size=config.vocab_size,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    use_cache, return_logprobs = (
        _flag("use_cache", use_cache),
        _flag("return_logprobs", return_logprobs),
    )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    B, T = _check_prompt(idx, config.vocab_size)
    pad = None if attention_mask is None else left_padding(attention_mask, (B, T))
    if pad is not None and not bool(pad.any()):
        pad, attention_mask = None, None  # no row is padded
    stops = _StopSequences([] if stop is None else stop, tokenizer, config.vocab_size)
    eos = args.eos_token_id
    fill = args.pad_token_id if args.pad_token_id is not None else (eos if eos is not None else 0)
    if args.seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(args.seed)
    steps = args.max_new_tokens

    # Buffers for up to PREALLOCATED new tokens, grown by doubling past that: a large
    # max_new_tokens with an end token must not reserve memory for tokens never generated.
    reserved = min(steps, PREALLOCATED)
    out = idx.new_full((B, T + reserved), fill)
    out[:, :T] = idx
    logprobs = torch.zeros(B, reserved, dtype=torch.float32, device=idx.device)
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    new_lengths = torch.zeros(B, dtype=torch.long, device=idx.device)
    ending = eos is not None or bool(stops)  # rows may finish early
    limit = config.block_size if config.position == "learned" else None
    min_pad = 0 if pad is None else int(pad.min())
    length = T
    was_training = model.training
    model.eval()
    # inference_mode, unlike no_grad, also skips autograd's version counters: each step
    # costs less. out, made outside it, stays an ordinary tensor.
    with torch.inference_mode(), _transposed_head(model, steps), _restore_mode(model, was_training):
        capacity = T + steps if limit is None else min(T + steps, limit + min_pad)
        capacity = capacity if capacity <= T + PREALLOCATED else None  # None: grows
        cache = KVCache(config.n_layer, capacity) if use_cache and steps else None
        step_input, step_mask = idx, attention_mask
        for i in range(steps):
            if cache is not None and limit is not None and length - min_pad > limit:
                cache = None  # the newest position passes block_size: the window must slide
            if cache is not None:
                output = model(
                    step_input, kv_cache=cache, attention_mask=step_mask, logits_to_keep=1
                )
            else:
                first = 0 if limit is None else max(0, length - limit)
                window_mask = None if pad is None else _window_mask(pad, first, length)
                output = model(out[:, first:length], attention_mask=window_mask, logits_to_keep=1)
            logits = output.logits[:, -1]
            if i == 0 and bool(torch.isnan(logits).any()):  # greedy would pick token 0
                raise ValueError(NAN_LOGITS)
            if length == out.size(1):  # past the preallocated tokens: double the buffers
                out, logprobs = _grow(out, logprobs, fill, T + steps - length)
            next_id = _sample(logits, args.temperature, args.top_k, args.top_p, generator)
            if return_logprobs:
                chosen = torch.log_softmax(logits.float(), dim=-1).gather(1, next_id)
                logprobs[:, i] = chosen.squeeze(1).masked_fill(finished, 0.0)
            if ending:
                next_id = next_id.masked_fill(finished[:, None], fill)
                new_lengths += ~finished
            out[:, length] = next_id[:, 0]
            length += 1
            if ending:
                active = ~finished
                if eos is not None:
                    finished |= active & (next_id[:, 0] == eos)
                if stops:
                    finished |= stops.hits(out[:, :length], T, active)
                if bool(finished.all()):
                    break
            step_input, step_mask = next_id, None
    ids = out if length == out.size(1) else out[:, :length].clone()
    if not return_logprobs:
        return ids
    if not ending:
        new_lengths.fill_(length - T)
    return Generation(ids, logprobs[:, : length - T].clone(), new_lengths)


def _grow(
    out: torch.Tensor, logprobs: torch.Tensor, fill: int, remaining: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """out and logprobs with room for as many more new tokens as they hold (at most remaining),
    made as ordinary tensors even inside inference_mode."""
    more = min(logprobs.size(1), remaining)
    with torch.inference_mode(False):
        out = torch.cat([out, out.new_full((out.size(0), more), fill)], dim=1)
        logprobs = torch.cat([logprobs, logprobs.new_zeros(logprobs.size(0), more)], dim=1)
    return out, logprobs


def _check_prompt(idx: object, vocab_size: int) -> tuple[int, int]:
    """(B, T) of a non-empty integer prompt of ids in the vocabulary, or a clear error."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in INTEGER_IDS:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(
            f"idx must be an integer tensor of shape (batch, time), got {shape}; wrap one "
            "sequence as idx[None], or use gptlib.generation.left_pad for a list of prompts"
        )
    B, T = idx.shape
    if B == 0 or T == 0:
        raise ValueError(
            f"the prompt is empty: idx has shape {(B, T)}; give every row at least one token "
            "(e.g. a start-of-text id)"
        )
    if idx.min() < 0 or idx.max() >= vocab_size:
        raise ValueError(
            f"token ids must be in [0, {vocab_size}), got min {int(idx.min())} max "
            f"{int(idx.max())}; does the tokenizer match the model's vocab_size?"
        )
    return B, T


@contextmanager
def _restore_mode(model: GPT, was_training: bool) -> Iterator[None]:
    """Put the model back in training mode afterwards if it was, even after an error."""
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _transposed_head(model: GPT, steps: int) -> Iterator[None]:
    """Inside it, model's forward multiplies by a transposed copy of a large head weight (CPU).

    One row times the (vocab, C) head weight is a matrix-vector product that CPU BLAS runs 2
    to 3.4 times slower with the weight as stored than with a (C, vocab) copy at vocabulary
    50,257 and C from 128 to 768 (table in benchmarks/README.md); the copy costs 2 to 13 such
    products, so it is made only for 32 steps or more, and only for a weight of a million
    numbers or more. Logits then differ from forward's by float rounding; cached and uncached
    generation use the same head, so they still agree.
    """
    weight = getattr(model.lm_head, "weight", None)
    if (
        steps >= 32
        and isinstance(model.lm_head, torch.nn.Linear)
        and weight.device.type == "cpu"
        and weight.numel() >= 2**20
    ):
        model._transposed_head = (weight, weight._version, weight.detach().t().contiguous())
    try:
        yield
    finally:
        model._transposed_head = None


def _window_mask(pad: torch.Tensor, first: int, length: int) -> torch.Tensor:
    """attention_mask of columns first..length-1 of a batch whose rows have `pad` padding."""
    columns = torch.arange(first, length, device=pad.device)
    return (columns[None, :] >= pad[:, None]).long()
