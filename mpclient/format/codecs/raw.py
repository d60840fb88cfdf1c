"""`raw`: the values as they are (the identity encoding of tensors no stage touched)."""
from __future__ import annotations

from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "raw"


def encode(shape: tuple[int, ...], dtype: str, values: Part) -> Encoded:
    return Encoded(NAME, tuple(shape), dtype, {}, {"values": values})


def decode(shape, dtype, params, parts):
    return as_dtype(parts["values"], dtype).reshape(shape)


def describe(node: Encoded) -> str:
    return node.dtype
