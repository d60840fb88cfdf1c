"""`rows`: a row partition (mixed precision across rows). Rows whose `selected` flag is 1 come, in order, from
`a`, the others from `b`; `a` and `b` decode to [their row count, row length] (any codec)."""
from __future__ import annotations

import math

import numpy as np

from mpclient.format import codecs
from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import STORAGE, as_dtype

NAME = "rows"


def encode(shape: tuple[int, ...], dtype: str, *, selected: Part | Encoded, a: Encoded, b: Encoded) -> Encoded:
    return Encoded(NAME, tuple(shape), dtype, {}, {"selected": selected, "a": a, "b": b})


def decode(shape, dtype, params, parts):
    rows = shape[0] if shape else 0
    width = math.prod(shape[1:])
    selected = parts["selected"].reshape(-1).astype(np.int64)
    if selected.size != rows or bool(((selected != 0) & (selected != 1)).any()):
        raise ValueError("rows: `selected` must hold one 0/1 flag per row")
    mask = selected.astype(bool)
    a, b = parts["a"].reshape(-1), parts["b"].reshape(-1)
    if a.size != int(mask.sum()) * width or b.size != int((~mask).sum()) * width:
        raise ValueError("rows: part sizes do not match the selected rows")
    out = np.empty((rows, width), dtype=STORAGE[dtype])
    out[mask] = as_dtype(a.reshape(-1, width), dtype)
    out[~mask] = as_dtype(b.reshape(-1, width), dtype)
    return out.reshape(shape)


def describe(node: Encoded) -> str:
    return f"rows {codecs.describe(node.parts['a'])} | {codecs.describe(node.parts['b'])}"
