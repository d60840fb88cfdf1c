"""Arithmetic several decoders share."""
from __future__ import annotations

import numpy as np

from mpclient.format.storage import STORAGE


def per_slice(shape: tuple, params: dict, values: np.ndarray) -> np.ndarray:
    """float32 values shaped to broadcast one per slice along `params.axis` (or one for the tensor)."""
    axis = params.get("axis")
    view = [1] * len(shape)
    if axis is not None:
        view[axis] = shape[axis]
    return values.astype(np.float32).reshape(view)


def symbols(values: np.ndarray, dtype: str, shape: tuple) -> np.ndarray:
    """Integer symbols as the node's dtype."""
    return values.astype(np.int64).astype(STORAGE[dtype]).reshape(shape)


def coded_suffix(node) -> str:
    """The suffix " +huffman" where one of the node's parts is entropy-coded, for `describe`."""
    return " +huffman" if any(getattr(p, "codec", None) == "huffman" for p in node.parts.values()) else ""


def storage_of(part) -> str:
    """A part's storage, or a nested node's decoded dtype."""
    return part.storage if hasattr(part, "storage") else part.dtype
