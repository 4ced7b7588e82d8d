"""GPT-1's fine-tuning recipe: task inputs, a classifier head on the last token, an auxiliary LM loss.

Taught in notebooks/07_gpt1.ipynb.

Radford et al. 2018 (§3.2-3.3) fine-tune the pre-trained transformer on each task by adding one
linear layer W_y on the final hidden state of the last input token, and by keeping language
modelling as an auxiliary objective: L3 = L2 (task) + λ · L1 (language model), with λ = 0.5.
Structured inputs (entailment, similarity, multiple choice) become one token sequence each,
framed by new start, delimiter and extract tokens (§3.3, Figure 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .loss import cross_entropy_loss
from .model import GPT, _atomic_write
from .sampling import check_integer

HEAD_FILE, HEAD_CONFIG_FILE = "head.safetensors", "head.json"

__all__ = [
    "ClassifierBatch",
    "ClassifierOutput",
    "SequenceClassifier",
    "add_tokens",
    "collate",
    "gpt1_input",
]


def add_tokens(model: GPT, n_new: int) -> GPT:
    """A copy of model with n_new more token ids after its vocabulary, for new special tokens.

    Taught in notebooks/07_gpt1.ipynb. GPT-1 fine-tunes with start, delimiter and extract
    tokens that pre-training never saw, randomly initialised (Radford et al. 2018, §3.3). The
    new ids are vocab_size .. vocab_size + n_new - 1; their rows of the token embedding (and
    of an untied output layer) are drawn as the model's init scheme draws them, from torch's
    global random state, and every other weight is copied, so an input of old ids gives the
    same logits over the old vocabulary as before. Raises ValueError for n_new < 1.
    """
    n_new = check_integer("n_new", n_new, 1, "a positive integer")
    config = dataclasses.replace(model.config, vocab_size=model.config.vocab_size + n_new)
    weight = model.tok_emb.weight
    bigger = GPT(config).to(device=weight.device, dtype=weight.dtype)
    new_state = bigger.state_dict()
    for name, tensor in model.state_dict().items():
        if new_state[name].shape == tensor.shape:
            new_state[name] = tensor
        else:  # a table with one row per token: the old rows keep their values
            new_state[name][: tensor.size(0)] = tensor
    bigger.load_state_dict(new_state)
    return bigger


def gpt1_input(
    *segments: Sequence[int], start_id: int, extract_id: int, delim_id: int | None = None
) -> list[int]:
    """One GPT-1 task input: start, the segments separated by the delimiter, then extract.

    Taught in notebooks/07_gpt1.ipynb. Classification passes one segment; entailment passes
    premise and hypothesis; similarity is run once per order of the two texts; multiple choice
    builds one input per answer (context, answer). Every id must be an integer >= 0 (NumPy
    and tensor integers count): a segment of text, a float id (1.5 was read as 1) or a negative
    id raises TypeError or ValueError naming it; encode text with the tokenizer first.
    """
    if not segments:
        raise ValueError("gpt1_input needs at least one segment of token ids")
    if len(segments) > 1 and delim_id is None:
        raise ValueError(f"{len(segments)} segments need a delim_id to separate them")
    start_id, extract_id = _token_id("start_id", start_id), _token_id("extract_id", extract_id)
    ids = [start_id]
    for i, segment in enumerate(segments):
        if i:
            ids.append(_token_id("delim_id", delim_id))
        ids.extend(_token_ids(f"segment {i}", segment))
    ids.append(extract_id)
    return ids


def _token_id(name: str, value: object) -> int:
    return check_integer(name, value, 0, "a token id (an integer >= 0)")


def _token_ids(name: str, ids: object) -> list[int]:
    """ids as a list of token ids >= 0, or a TypeError / ValueError naming `name`."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise TypeError(
            f"{name} must be a list of token ids, got {type(ids).__name__}; encode text with "
            "the tokenizer first"
        )
    if isinstance(ids, torch.Tensor | np.ndarray):
        ids = ids.tolist()
    if any(isinstance(t, list) for t in ids):
        raise ValueError(f"{name} must be a flat list of token ids, got a nested list")
    return [_token_id(f"{name}: token id", t) for t in ids]


@dataclass
class ClassifierBatch:
    """A padded batch of task inputs for `SequenceClassifier`."""

    idx: torch.Tensor  # (B, T) token ids, right-padded
    extract_positions: torch.Tensor  # (B,) index of each row's last token (the extract token)
    # (B, T) next-token targets inside the text, -1 elsewhere (ignored, as -100 would be)
    lm_targets: torch.Tensor
    labels: torch.Tensor | None = None  # (B,) class ids


def collate(
    sequences: Sequence[Sequence[int]],
    labels: Iterable[int] | None = None,
    pad_id: int = 0,
    special_ids: Iterable[int] = (),
) -> ClassifierBatch:
    """Right-pad task inputs into one batch and mark where the LM and the head should look.

    Taught in notebooks/07_gpt1.ipynb. Padding sits after the extract token, where causal
    attention keeps it from changing anything the head reads. The auxiliary LM target of a
    position is the next token, unless that token is padding or one of `special_ids` (the
    model is not asked to predict the start, delimiter or extract tokens). Token ids and
    pad_id are integers >= 0; labels are class ids >= 0, or -1 / -100 for an input the task
    loss ignores. Raises TypeError or ValueError naming a bad input, label or id (a float was
    truncated, a string was split into characters, before).
    """
    if isinstance(sequences, str | bytes) or not isinstance(sequences, Sequence):
        raise TypeError(
            f"sequences must be a list of token-id lists, got {type(sequences).__name__}"
        )
    if sequences and not isinstance(sequences[0], Iterable):
        raise TypeError(
            "sequences must be a list of token-id lists, one per input; wrap a single input as "
            "[ids]"
        )
    sequences = [_token_ids(f"sequences[{row}]", s) for row, s in enumerate(sequences)]
    pad_id = _token_id("pad_id", pad_id)
    if isinstance(special_ids, str) or not isinstance(special_ids, Iterable):
        raise TypeError(
            f"special_ids must be a list of token ids, got {special_ids!r}; wrap one as [id]"
        )
    special_ids = _token_ids("special_ids", special_ids)
    if not sequences or any(len(s) < 2 for s in sequences):
        raise ValueError("collate needs a non-empty list of inputs, each at least 2 tokens long")
    longest = max(len(s) for s in sequences)
    idx = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    lm_targets = torch.full((len(sequences), longest), -1, dtype=torch.long)
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids = torch.as_tensor(list(seq), dtype=torch.long)
        idx[row, : len(ids)] = ids
        nxt = ids[1:].clone()
        nxt[torch.isin(nxt, special)] = -1
        lm_targets[row, : len(nxt)] = nxt
    positions = torch.tensor([len(s) - 1 for s in sequences], dtype=torch.long)
    label_tensor = None
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Iterable):
            raise TypeError(f"labels must be a list of class ids, got {type(labels).__name__}")
        if isinstance(labels, torch.Tensor | np.ndarray):
            labels = labels.tolist()
        checked = [check_integer("label", c, -100, "a class id >= 0, or -1 / -100") for c in labels]
        if any(c < -1 and c != -100 for c in checked):
            bad = next(c for c in checked if c < -1 and c != -100)
            raise ValueError(f"label must be a class id >= 0, or -1 / -100 to ignore, got {bad}")
        label_tensor = torch.tensor(checked, dtype=torch.long)
        if label_tensor.shape != (len(sequences),):
            raise ValueError(
                f"got {label_tensor.numel()} labels for {len(sequences)} inputs; give one each"
            )
    return ClassifierBatch(idx, positions, lm_targets, label_tensor)


@dataclass
class ClassifierOutput:
    """What `SequenceClassifier.forward` returns."""

    logits: torch.Tensor  # (B, n_classes)
    loss: torch.Tensor | None = None  # task loss + lm_weight * LM loss (GPT-1's L3)
    task_loss: torch.Tensor | None = None  # cross-entropy of the labels (L2)
    lm_loss: torch.Tensor | None = None  # next-token cross-entropy on the inputs (L1)


class SequenceClassifier(nn.Module):
    """A GPT with GPT-1's task head: Linear(final hidden state of the extract token) -> classes.

    Taught in notebooks/07_gpt1.ipynb. `lm_weight` is λ of L3 = L2 + λ·L1 (GPT-1 uses 0.5;
    0 turns the auxiliary objective off); `dropout` is applied before the head (GPT-1: 0.1).
    Both losses are `gptlib.loss.cross_entropy_loss`: a label or LM target of -100 or -1 is
    ignored, and a batch whose LM targets are all ignored (inputs of only special tokens) has
    an LM loss of zero that keeps the graph, never NaN.
    `n_classes=1` makes the head a single score, as InstructGPT's reward model replaces the
    unembedding by a scalar head (Ouyang et al. 2022, §3.5); such a head has no class labels
    and is trained with `gptlib.alignment.pairwise_loss` instead (notebooks/12_instructgpt.ipynb).
    """

    def __init__(
        self, gpt: GPT, n_classes: int, lm_weight: float = 0.5, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if not isinstance(gpt, GPT):
            raise TypeError(f"gpt must be a gptlib GPT model, got {type(gpt).__name__}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
            raise TypeError(
                f"n_classes must be an integer >= 1 (1: a scalar score), got {n_classes!r}"
            )
        if n_classes < 1:
            raise ValueError(
                f"n_classes must be an integer >= 1 (1: a scalar score), got {n_classes!r}"
            )
        for name, value, upper in (("lm_weight (λ)", lm_weight, math.inf), ("dropout", dropout, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (0 <= value < upper and math.isfinite(value)):
                raise ValueError(f"{name} must be in [0, {upper}), got {value!r}")
        self.gpt = gpt
        self.lm_weight = lm_weight
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, int(n_classes))
        nn.init.normal_(self.head.weight, std=gpt.config.init_std)
        nn.init.zeros_(self.head.bias)

    def hidden_and_logits(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final hidden states (B, T, n_embd), after any final norm, and the LM logits."""
        captured: list[torch.Tensor] = []
        hook = self.gpt.ln_f.register_forward_hook(lambda mod, args, out: captured.append(out))
        try:
            logits = self.gpt(idx).logits
        finally:
            hook.remove()
        return captured[0], logits

    def forward(self, batch: ClassifierBatch) -> ClassifierOutput:
        """Class logits from each row's extract token; losses when the batch has labels.

        Raises TypeError for a batch that is no `ClassifierBatch` (build one with `collate`)
        and ValueError for extract positions that are not one per row inside the inputs.
        """
        if not isinstance(batch, ClassifierBatch):
            raise TypeError(
                f"batch must be a ClassifierBatch, got {type(batch).__name__}; build one with "
                "gptlib.finetune.collate(sequences, labels)"
            )
        B, T = batch.idx.shape
        where = batch.extract_positions
        if where.shape != (B,) or bool(((where < 0) | (where >= T)).any()):
            raise ValueError(
                f"extract_positions must hold one position in [0, {T}) per row, got "
                f"{where.tolist()}; collate sets them"
            )
        hidden, lm_logits = self.hidden_and_logits(batch.idx)
        rows = torch.arange(batch.idx.size(0), device=batch.idx.device)
        last = hidden[rows, batch.extract_positions]  # (B, n_embd)
        logits = self.head(self.dropout(last))
        if batch.labels is None:
            return ClassifierOutput(logits)
        if logits.size(-1) == 1:
            raise ValueError(
                "a scalar head (n_classes=1) has no class labels to fit; leave labels out and "
                "train its scores with a loss of their own, e.g. gptlib.alignment.pairwise_loss"
            )
        task_loss = cross_entropy_loss(logits, batch.labels)
        lm_loss = cross_entropy_loss(lm_logits, batch.lm_targets)
        return ClassifierOutput(logits, task_loss + self.lm_weight * lm_loss, task_loss, lm_loss)

    @torch.no_grad()
    def predict(self, batch: ClassifierBatch) -> torch.Tensor:
        """The most likely class of each row (B,), computed in eval mode."""
        was_training = self.training
        self.eval()
        classes = self(batch).logits.argmax(dim=-1)
        self.train(was_training)
        return classes

    def save(self, path: str | os.PathLike) -> Path:
        """Write the GPT (`GPT.save`), then path/head.safetensors and path/head.json (no pickle)."""
        from safetensors.torch import save_file

        path = self.gpt.save(path)
        state = {name: t.detach().contiguous().cpu() for name, t in self.head.state_dict().items()}
        _atomic_write(path / HEAD_FILE, lambda tmp: save_file(state, tmp))
        settings = {
            "n_classes": self.head.out_features,
            "lm_weight": self.lm_weight,
            "dropout": self.dropout.p,
        }
        _atomic_write(
            path / HEAD_CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(settings))
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SequenceClassifier:
        """Load a classifier written by `save`, in eval mode."""
        from safetensors.torch import load_file

        path = Path(path)
        for name in (HEAD_FILE, HEAD_CONFIG_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} is missing; a classifier folder is written by "
                    "SequenceClassifier.save (a GPT.save folder has no head)"
                )
        model = cls(GPT.load(path), **json.loads((path / HEAD_CONFIG_FILE).read_text()))
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model.eval()
