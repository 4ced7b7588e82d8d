"""The key/value cache of generation: preallocated per-layer buffers written in place, rolling
buffers for local-window layers, the left padding of a batch of prompts, and the cache's size.

Taught in notebooks/04_attention.ipynb (what the cache holds, MQA/GQA and its size) and
notebooks/14_inference.ipynb (generation with it, batches of prompts of different lengths).
`gptlib.attention` imports everything here, so `from gptlib.attention import KVCache` works.
"""

from __future__ import annotations

import math
import weakref

import torch

from .config import GPTConfig
from .sampling import check_integer, check_real


def left_padding(attention_mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Padding tokens at the start of each row of a left-padded attention_mask: (B,) int64.

    Taught in notebooks/14_inference.ipynb. attention_mask (B, T) holds 1 for a real token and
    0 for padding, as in transformers; each row's zeros must all come before its first 1 (left
    padding, so that every row's next token is in the last column). Raises ValueError for
    another shape, values other than 0/1, padding that is not on the left, or a row without a
    real token.
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(
            f"attention_mask must be a tensor of 0s and 1s, got {type(attention_mask).__name__}"
        )
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(shape)} "
            "(batch, every token so far: the cached ones and the new ones)"
        )
    real = attention_mask.to(torch.bool)
    if not torch.equal(real.to(attention_mask.dtype), attention_mask):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (a real token)")
    pad = (~real).sum(dim=1)
    columns = torch.arange(shape[1], device=real.device)
    if not torch.equal(real, columns[None, :] >= pad[:, None]):
        raise ValueError(
            "attention_mask must be left padding: in each row every 0 comes before the first 1 "
            "(gptlib.generation.left_pad builds such a batch from token lists)"
        )
    if bool((pad == shape[1]).any()):
        row = int((pad == shape[1]).nonzero()[0, 0])
        raise ValueError(f"row {row} of attention_mask has no real token; give it at least one")
    return pad


class LayerCache:
    """One layer's keys and values of the tokens seen so far, in preallocated buffers.

    Taught in notebooks/04_attention.ipynb. A dense or strided layer writes token t into slot t
    of a buffer allocated once (a static cache with a write position, as inference engines
    keep it), so a step copies one key and one value and concatenates nothing. A local layer
    keeps its last `window` tokens in a rolling buffer, token t in slot t mod window (Mistral's
    rolling buffer cache, Jiang et al. 2023, §2), so its memory stays bounded.

    `k` and `v` (B, n_kv_head, T_held, head_dim) and `positions` (T_held,), or (B, T_held) in a
    left-padded batch, show the held tokens in the order they came.
    """

    def __init__(self) -> None:
        self.seen = 0  # tokens written so far: the column of the next one
        self.window: int | None = None  # a local layer's window (set by its first update)
        self.capacity: int | None = None  # most tokens a dense layer may hold; None: grow
        self.pad: torch.Tensor | None = None  # (B,) left padding per row, set by KVCache
        self._k: torch.Tensor | None = None  # (B, n_kv_head, slots, head_dim)
        self._v: torch.Tensor | None = None
        self._pad_bias: torch.Tensor | None = None  # (B, 1, 1, slots): -inf at padding
        self._returned: tuple[int, int | None] = (0, None)  # what the last update returned

    @property
    def held(self) -> int:
        """Tokens whose keys and values the layer holds (at most window in a local layer)."""
        return self.seen if self.window is None else min(self.seen, self.window)

    @property
    def slots(self) -> int:
        """Tokens the allocated buffers can hold (0 before the first token)."""
        return 0 if self._k is None else self._k.size(2)

    def _in_order(self, buffer: torch.Tensor | None) -> torch.Tensor | None:
        if buffer is None or self.window is None or self.seen <= self.window:
            return None if buffer is None else buffer[:, :, : self.held]
        oldest = self.seen % self.window
        return torch.cat([buffer[:, :, oldest:], buffer[:, :, :oldest]], dim=2)

    @property
    def k(self) -> torch.Tensor | None:
        """Held keys, oldest first: (B, n_kv_head, T_held, head_dim), or None before any token."""
        return self._in_order(self._k)

    @property
    def v(self) -> torch.Tensor | None:
        """Held values, oldest first: (B, n_kv_head, T_held, head_dim), or None before any token."""
        return self._in_order(self._v)

    @property
    def positions(self) -> torch.Tensor | None:
        """Positions of the held tokens, oldest first: (T_held,), or (B, T_held) if padded."""
        if self._k is None:
            return None
        columns = torch.arange(self.seen - self.held, self.seen, device=self._k.device)
        return columns if self.pad is None else columns[None, :] - self.pad[:, None]

    def update(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        window: int | None = None,
        in_order: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the keys and values (B, n_kv_head, T, head_dim) of T new tokens.

        Returns the keys and values to attend over: every held token and the T new ones.
        window is the layer's local window (None keeps every token). In a local layer one new
        token is attended to with the keys in slot order, which attention does not care
        about; in_order=True returns them oldest first (for attention maps). Raises ValueError
        if the cache was filled by another batch or a layer of another shape.
        """
        B, H, T, D = k.shape
        if self._k is None:
            self.window = window
            if window is None:
                slots = self.capacity or max(T, 64)
            else:  # a window wider than the capacity never wraps round
                slots = window if self.capacity is None else min(window, self.capacity)
            self._k, self._v = k.new_empty(B, H, slots, D), v.new_empty(B, H, slots, D)
        elif (
            (B, H, D) != (self._k.size(0), self._k.size(1), self._k.size(3))
            or k.dtype != self._k.dtype
            or window != self.window
        ):
            raise ValueError(
                f"this LayerCache holds keys of shape {tuple(self._k.shape[:2])} x head_dim "
                f"{self._k.size(3)} ({self._k.dtype}, window {self.window}), got "
                f"{(B, H)} x {D} ({k.dtype}, window {window}); use a new KVCache for another "
                "batch or model"
            )
        start = self.seen
        if self.window is None:
            end = start + T
            if end > self._k.size(2):
                self._grow(end)
            self._k[:, :, start:end] = k
            self._v[:, :, start:end] = v
            self.seen, self._returned = end, (0, None)
            return self._k[:, :, :end], self._v[:, :, :end]
        if T == 1 and not in_order:
            slot = start % self.window
            self._k[:, :, slot : slot + 1] = k
            self._v[:, :, slot : slot + 1] = v
            self.seen += 1
            self._returned = (0, self.held)  # slots 0..held-1, in slot order
            return self._k[:, :, : self.held], self._v[:, :, : self.held]
        # Several tokens: attend over the held window followed by all new tokens (a new token
        # may see earlier new ones), then keep only the last `window` of them.
        held = self.held
        keys = k if held == 0 else torch.cat([self.k, k], dim=2)
        values = v if held == 0 else torch.cat([self.v, v], dim=2)
        kept = min(T, self.window)
        slots = torch.arange(start + T - kept, start + T, device=k.device) % self.window
        self._k.index_copy_(2, slots, k[:, :, T - kept :])
        self._v.index_copy_(2, slots, v[:, :, T - kept :])
        self.seen += T
        self._returned = (start - held, None)
        return keys, values

    def _grow(self, needed: int) -> None:
        if self.capacity is not None:
            raise ValueError(
                f"the cache holds at most {self.capacity} tokens (KVCache max_length), "
                f"{needed} were asked for; make a KVCache with a larger max_length"
            )
        slots = max(needed, 2 * self._k.size(2))  # doubling keeps the copies O(1) per token
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty(old.size(0), old.size(1), slots, old.size(3))
            new[:, :, : self.seen] = old[:, :, : self.seen]
            setattr(self, name, new)
        self._pad_bias = None

    def key_positions(self) -> torch.Tensor:
        """Positions of the keys the last `update` returned, in its order: (n,) or (B, n)."""
        first, slots = self._returned
        device = self._k.device
        if slots is None:
            columns = torch.arange(first, self.seen, device=device)
        else:  # a rolling buffer's slot s holds the latest token t with t mod window == s
            s = torch.arange(slots, device=device)
            columns = s + self.window * torch.div(
                self.seen - 1 - s, self.window, rounding_mode="floor"
            )
        return columns if self.pad is None else columns[None, :] - self.pad[:, None]

    def padding_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, 1, 1, n) additive bias for a dense layer's held keys: -inf at padding, else 0."""
        if self._pad_bias is None or self._pad_bias.dtype != dtype:
            slots = torch.arange(self._k.size(2), device=self._k.device)
            padding = slots[None, :] < self.pad[:, None]
            bias = torch.zeros(padding.shape, dtype=dtype, device=self._k.device)
            self._pad_bias = bias.masked_fill(padding, float("-inf"))[:, None, None, :]
        return self._pad_bias[..., : self.seen]


class KVCache:
    """The per-layer caches of a model, and how many tokens have passed through it.

    Taught in notebooks/04_attention.ipynb; batches of prompts of different lengths in
    notebooks/14_inference.ipynb. Pass it to `model(idx, kv_cache=cache)` repeatedly to feed a
    sequence piece by piece. max_length (tokens, prompt included) preallocates every dense
    layer's buffer once and refuses more tokens; None lets the buffers grow by doubling.
    The first call fixes the batch size and, from its attention_mask, each row's left padding.
    """

    def __init__(self, n_layer: int, max_length: int | None = None) -> None:
        self.n_layer = check_integer("n_layer", n_layer, 1, "a positive integer")
        self.max_length = (
            None
            if max_length is None
            else check_integer("max_length", max_length, 1, "a positive integer or None")
        )
        self.layers = [LayerCache() for _ in range(self.n_layer)]
        for layer in self.layers:
            layer.capacity = self.max_length
        self.length = 0
        self.batch_size: int | None = None
        self.pad: torch.Tensor | None = None  # (B,) left padding of each row, None if none
        self._model: weakref.ref | None = None  # the model that filled it

    def __repr__(self) -> str:
        return (
            f"KVCache(n_layer={self.n_layer}, max_length={self.max_length}, "
            f"length={self.length}, batch_size={self.batch_size})"
        )

    def num_cached(self) -> int:
        """Key/value vectors held (summed over layers), per sequence and head."""
        return sum(layer.held for layer in self.layers)

    def crop(self, length: int) -> None:
        """Forget every token after the first `length`, as if only those had been fed.

        Taught in notebooks/14_inference.ipynb: speculative decoding writes a round's guesses
        into the cache and takes back the ones the target rejected. A dense or strided layer
        only moves its write position back. A local layer's rolling buffer can be cropped only
        while it holds every token it has seen (at most window of them): later tokens have
        overwritten the slots of earlier ones, which cropping would need again. Raises
        ValueError for a length outside [0, self.length] or a rolling buffer that wrapped round.
        """
        length = check_integer("length", length, 0, f"an integer in [0, {self.length}]")
        if length > self.length:
            raise ValueError(
                f"the cache holds {self.length} tokens; it cannot be cropped to {length}"
            )
        for i, layer in enumerate(self.layers):
            if layer.window is not None and layer.seen > layer.window and length < layer.seen:
                raise ValueError(
                    f"layer {i} keeps a rolling buffer of {layer.window} tokens and has seen "
                    f"{layer.seen}: the keys needed after cropping to {length} are overwritten; "
                    "re-run the sequence's first tokens through a new KVCache instead"
                )
        for layer in self.layers:
            layer.seen = min(layer.seen, length)
            layer._returned = (0, None)
        self.length = length

    def reorder(self, rows: torch.Tensor) -> None:
        """Make row i of the batch hold what row rows[i] held, in every layer: for beam search.

        Taught in notebooks/08_gpt2.ipynb. rows (B_new,) int64 indexes the current batch; a row
        may be taken several times (a beam that splits) or not at all (a beam that is dropped),
        and the batch size becomes B_new. Raises ValueError for rows outside the batch.
        """
        if self.batch_size is None:
            raise ValueError("this KVCache is empty; reorder it after the first forward pass")
        rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.dim() != 1 or rows.numel() == 0 or rows.min() < 0 or rows.max() >= self.batch_size:
            raise ValueError(
                f"rows must be a non-empty 1-D tensor of row indices in [0, {self.batch_size}), "
                f"got {rows.tolist()}"
            )
        if self.pad is not None:
            self.pad = self.pad[rows.to(self.pad.device)]
        for layer in self.layers:
            if layer._k is not None:
                rows = rows.to(layer._k.device)
                layer._k, layer._v = layer._k.index_select(0, rows), layer._v.index_select(0, rows)
            layer.pad, layer._pad_bias = self.pad, None
        self.batch_size = rows.numel()

    def reserve(
        self,
        batch_size: int,
        n_new: int,
        pad: torch.Tensor | None = None,
        model: torch.nn.Module | None = None,
    ) -> torch.Tensor | None:
        """Check that n_new more tokens of this batch fit; returns the batch's left padding.

        Called by `GPT.forward` before it writes. pad (B,) is the padding of an attention_mask;
        the first call records it, later calls may repeat it; `model` is the module writing,
        recorded by the first call. Raises ValueError for another batch size, for more tokens
        than max_length, for padding that changed, or for another model than the one that
        filled the cache (its keys and values would be attended to as if they were its own).
        """
        if model is not None and self.length and self._model is not None:
            if self._model() is not model:
                raise ValueError(
                    "this KVCache was filled by another model, whose keys and values this one "
                    "would read as its own; make a new KVCache for each model (speculative "
                    "decoding keeps one per model)"
                )
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ValueError(
                f"this KVCache holds a batch of {self.batch_size} sequence(s), got a batch of "
                f"{batch_size}; make a new KVCache for every batch"
            )
        if self.max_length is not None and self.length + n_new > self.max_length:
            raise ValueError(
                f"this KVCache holds at most max_length={self.max_length} tokens; it has "
                f"{self.length} and {n_new} more were given; make a KVCache with a larger "
                "max_length"
            )
        given = pad
        if pad is not None and not bool(pad.any()):
            pad = None  # no row is padded: attention needs no padding mask
        if self.length == 0:
            self._model = None if model is None else weakref.ref(model)
            self.pad = pad
            for layer in self.layers:
                layer.pad = pad
        elif given is not None and not torch.equal(
            given, torch.zeros_like(given) if self.pad is None else self.pad
        ):
            raise ValueError(
                "attention_mask's padding differs from the padding this KVCache was filled "
                "with; a batch keeps its left padding for its whole generation"
            )
        self.batch_size = batch_size
        return self.pad


def kv_cache_bytes(config: GPTConfig, n_tokens: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes a KV cache holds for n_tokens: a key and a value per layer, KV head and token.

    Taught in notebooks/04_attention.ipynb. bytes_per_value=2 is 16-bit numbers. A local
    window caps n_tokens at window_size in those layers; this counts every layer as dense.
    bytes_per_value may be a fraction (0.5 for 4-bit numbers); the total is rounded up to whole
    bytes. Raises TypeError for a config that is no GPTConfig (a model: pass model.config) or
    a count that is no integer, ValueError for a negative n_tokens or a bytes_per_value <= 0.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(
            f"config must be a GPTConfig, got {type(config).__name__}"
            + (
                "; pass model.config"
                if isinstance(getattr(config, "config", None), GPTConfig)
                else ""
            )
        )
    n_tokens = check_integer("n_tokens", n_tokens, 0, "an integer >= 0")
    size = check_real("bytes_per_value", bytes_per_value, "a number > 0 (2 for 16-bit numbers)")
    if size <= 0:
        raise ValueError(f"bytes_per_value must be a number > 0 (2 for 16-bit numbers), got {size}")
    values = 2 * config.n_layer * config.n_kv_head * config.head_dim * n_tokens
    return math.ceil(values * size)
