"""`sign`: binary weights, value = (2 * bit - 1) * scale, one float32 scale per slice along `axis` (or one).
Parts: signs (0/1, usually a 1-bit `bitpacked` node), scales."""
from __future__ import annotations

import numpy as np

from mpclient.format.codecs._shared import per_slice
from mpclient.format.codecs.affine import Grid
from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "sign"


def encode(shape: tuple[int, ...], dtype: str, *, signs: Part | Encoded, scales: Part, axis: int | None) -> Encoded:
    return Encoded(NAME, tuple(shape), dtype, {"axis": axis}, {"signs": signs, "scales": scales})


def grid(shape, params, parts) -> Grid:
    """Codes -1 / +1 on the slices' scales (see affine.Grid)."""
    codes = parts["signs"].reshape(shape).astype(np.int64) * 2 - 1
    return Grid(codes, parts["scales"].astype(np.float32).reshape(-1), None, params.get("axis"), None, 1, True)


def decode(shape, dtype, params, parts):
    bits = parts["signs"].reshape(shape).astype(np.float32)
    return as_dtype((bits * 2 - 1) * per_slice(shape, params, parts["scales"]), dtype)


def describe(node: Encoded) -> str:
    return f"binary {'per_tensor' if node.params.get('axis') is None else 'per_channel'}"
