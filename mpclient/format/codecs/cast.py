"""`cast`: values stored in a narrower float type (float16 / bfloat16), widened on decode."""
from __future__ import annotations

from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "cast"
STORAGES = ("float16", "bfloat16")


def encode(shape: tuple[int, ...], dtype: str, values: Part) -> Encoded:
    if values.storage not in STORAGES:
        raise ValueError(f"cast stores float16 or bfloat16, not {values.storage}")
    return Encoded(NAME, tuple(shape), dtype, {}, {"values": values})


def decode(shape, dtype, params, parts):
    return as_dtype(parts["values"], dtype).reshape(shape)


def describe(node: Encoded) -> str:
    return node.parts["values"].storage
