"""What goes in and out of a gptlib tokenizer: text, token ids, and the JSON file it saves.

Taught in notebooks/03_tokenization.ipynb. `CharTokenizer` and `BPETokenizer` check their
inputs here, so both refuse the same mistakes with the same clear errors at the call that
made them: bytes or a number where text belongs, a 2-D batch or floats where one sequence of
ids belongs, a file that is not the tokenizer's own.
"""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

__all__ = ["check_text", "read_tokenizer_file", "token_id_list"]


def check_text(text: Any, method: str) -> str:
    """Return text if it is a str, else raise TypeError naming the method and what it needs.

    Taught in notebooks/03_tokenization.ipynb (every tokenizer method that takes text).
    """
    if not isinstance(text, str):
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(text, bytes) else ""
        raise TypeError(f"{method} takes a str, got {type(text).__name__}{hint}")
    return text


def token_id_list(ids: Any, method: str = "decode") -> list[int]:
    """The token ids of one sequence as a list of Python ints.

    Taught in notebooks/03_tokenization.ipynb. Accepts a list or tuple of integers (NumPy
    integers too) or a 1-D integer tensor or array. Raises ValueError for a 2-D batch (decode
    each row) and TypeError for text, a single id, floats or bools, naming the first bad item.
    """
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{method} takes a sequence of token ids, not {type(ids).__name__}")
    if hasattr(ids, "ndim") and hasattr(ids, "tolist"):  # a torch tensor or a NumPy array
        if ids.ndim != 1:
            raise ValueError(
                f"{method} takes one sequence of ids (1-D), got shape {tuple(ids.shape)}; for "
                f"a batch, {method} each row: [tokenizer.{method}(row) for row in ids.tolist()]"
            )
        ids = ids.tolist()
    try:
        items = list(ids)
    except TypeError:
        raise TypeError(
            f"{method} takes a sequence of token ids, got {type(ids).__name__} {ids!r}; for one "
            f"id pass [id]"
        ) from None
    out = []
    for position, item in enumerate(items):
        try:
            if isinstance(item, bool):
                raise TypeError
            out.append(operator.index(item))
        except TypeError:
            raise TypeError(
                f"{method} takes integer token ids; item {position} is {item!r} "
                f"({type(item).__name__})"
                + ("; pass one sequence, not a batch" if isinstance(item, (list, tuple)) else "")
            ) from None
    return out


def read_tokenizer_file(path: str | Path, file_format: str, kind: str) -> dict:
    """Read the JSON state a tokenizer's ``save`` wrote, checking its ``format`` tag.

    Taught in notebooks/03_tokenization.ipynb.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No tokenizer file at {path}; write one with {kind}.save(path).")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON tokenizer file ({exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != file_format:
        raise ValueError(
            f"{path} is not a {kind} file (no 'format': {file_format!r}); "
            f"write one with {kind}.save(path)."
        )
    return state
