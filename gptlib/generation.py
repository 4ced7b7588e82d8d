"""Generation: the decoding loop behind `GPT.generate`, with a KV cache, left-padded batches of
prompts of different lengths, stop sequences and the log-probability of every generated token;
and beam search, which looks for the likeliest continuation instead of sampling one.

Taught in notebooks/08_gpt2.ipynb (sampling) and notebooks/14_inference.ipynb (the cache and
batches). Stop sequences and log-probabilities serve notebooks/11_codex.ipynb: it samples programs
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
from .sampling import NAN_LOGITS, _sample, check_integer, check_real, check_sampling_args
from .tokenizer_io import check_text

if TYPE_CHECKING:
    from .model import GPT

__all__ = ["Generation", "beam_search", "cut_at_stop", "generate", "left_pad"]
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

    For scoring generated programs in notebooks/11_codex.ipynb: decode a row's continuation, cut it
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
      the (B, T + new) tensor; log-probabilities are the model's own. notebooks/11_codex.ipynb uses
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


def beam_search(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    return_scores: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The likeliest continuation of each row of idx (B, T) that beam search finds: (B, T + new).

    Taught in notebooks/08_gpt2.ipynb. Each row keeps num_beams partial continuations (beams),
    ranked by their log-probability; every step extends each beam by every token and keeps the
    num_beams best extensions. With eos_token_id, an extension ending in it (and ranked among
    the best num_beams) is set aside as a finished hypothesis; when max_new_tokens steps have
    run (there is no early stopping), the beams still running join them, and each row returns
    the hypothesis with the best score = log p(continuation | prompt) / length ** length_penalty,
    length counting the new tokens (end-of-text included). Rows that finished early are padded
    with pad_token_id (default eos_token_id); new = max_new_tokens. Without eos_token_id every
    hypothesis has the same length and length_penalty changes nothing; with it, a larger
    length_penalty favours longer continuations (log-probabilities are negative). num_beams=1
    is greedy decoding; enough beams to keep every continuation is exhaustive search. Holtzman
    et al. 2019 (Figure 1, Table 1) show that this search for likely text makes a language
    model's output more repetitive than sampling. use_cache=True feeds one token per step
    through a `KVCache` whose rows follow their beams (`KVCache.reorder`); with learned positions
    past block_size, each step re-reads the last block_size tokens. return_scores=True also
    returns the (B,) scores. Raises ValueError or TypeError, naming the argument, for a bad
    prompt, max_new_tokens, num_beams, length_penalty or token id.
    """
    config = model.config
    args = check_sampling_args(
        max_new_tokens=max_new_tokens,
        vocab_size=config.vocab_size,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    K = check_integer("num_beams", num_beams, 1, "a positive integer")
    penalty = check_real(
        "length_penalty", length_penalty, "a finite number (1.0: mean log-probability)"
    )
    B, T = _check_prompt(idx, config.vocab_size)
    steps, eos = args.max_new_tokens, args.eos_token_id
    fill = args.pad_token_id if args.pad_token_id is not None else (eos if eos is not None else 0)
    limit = config.block_size if config.position == "learned" else None
    cached = use_cache and (limit is None or T + steps <= limit)
    out = idx.repeat_interleave(K, dim=0)  # (B·K, T): beam k of row b is row b·K + k
    sums = torch.full((B, K), float("-inf"), device=idx.device)
    sums[:, 0] = 0.0  # the copies start at -inf, so the first step expands one beam per row
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]
    was_training = model.training
    model.eval()
    with torch.inference_mode(), _restore_mode(model, was_training):
        cache = KVCache(config.n_layer, T + steps) if cached and steps else None
        if cache is not None:
            logits = model(idx, kv_cache=cache, logits_to_keep=1).logits[:, -1]
            rows = torch.arange(B, device=idx.device).repeat_interleave(K)
            cache.reorder(rows)
            logits = logits[rows]
        for step in range(steps):
            if cache is None:
                first = 0 if limit is None else max(0, out.size(1) - limit)
                logits = model(out[:, first:], logits_to_keep=1).logits[:, -1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B·K, V)
            V = logprobs.size(1)
            candidates = (sums.view(-1, 1) + logprobs).view(B, K * V)
            top, flat = candidates.topk(min(2 * K, K * V), dim=1)  # at most K can end in eos
            source, tokens = (
                torch.zeros(B, K, dtype=torch.long),
                torch.zeros(B, K, dtype=torch.long),
            )
            new_sums = torch.full((B, K), float("-inf"), device=idx.device)
            for b in range(B):
                kept = 0
                for rank, (score, index) in enumerate(
                    zip(top[b].tolist(), flat[b].tolist(), strict=True)
                ):
                    beam, token = divmod(index, V)
                    if token == eos:
                        if rank < K:  # a finished hypothesis ranked among the best K
                            ids = torch.cat([out[b * K + beam, T:], out.new_tensor([token])])
                            finished[b].append((score / (step + 1) ** penalty, ids))
                    elif kept < K:
                        source[b, kept], tokens[b, kept], new_sums[b, kept] = beam, token, score
                        kept += 1
            rows = (torch.arange(B)[:, None] * K + source).view(-1).to(idx.device)
            next_tokens = tokens.view(-1, 1).to(idx.device)
            out, sums = torch.cat([out[rows], next_tokens], dim=1), new_sums
            if cache is not None and step + 1 < steps:
                cache.reorder(rows)
                logits = model(next_tokens, kv_cache=cache, logits_to_keep=1).logits[:, -1]
    result = idx.new_full((B, T + steps), fill)
    result[:, :T] = idx
    scores = torch.zeros(B)
    for b in range(B):
        running = [
            (float(sums[b, k]) / steps**penalty, out[b * K + k, T:]) for k in range(K) if steps
        ]
        hypotheses = [h for h in finished[b] + running if h[0] != float("-inf")]
        if hypotheses:
            scores[b], best = max(hypotheses, key=lambda h: h[0])
            result[b, T : T + best.numel()] = best
    return (result, scores) if return_scores else result


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
