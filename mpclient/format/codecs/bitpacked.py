"""`bitpacked`: integers of `width` bits packed MSB-first into `data` (uint8); value = symbol - offset."""
from __future__ import annotations

import math

import numpy as np

from mpclient.format import bitpack
from mpclient.format.codecs._shared import symbols
from mpclient.format.nodes import Encoded, Part

NAME = "bitpacked"


def pack(values: np.ndarray, width: int, offset: int = 0) -> np.ndarray:
    """`values + offset` (each in [0, 2^width)) packed `width` bits each: the `data` part's uint8 bytes."""
    return np.frombuffer(bitpack.pack_uint(np.asarray(values).reshape(-1).astype(np.int64) + offset, width),
                         dtype=np.uint8).copy()


def encode(count: int, dtype: str, *, data: Part, width: int, offset: int = 0) -> Encoded:
    if not 1 <= width <= 16 or data.storage != "uint8":
        raise ValueError("bitpacked packs 1 to 16 bits per value into uint8 data")
    return Encoded(NAME, (int(count),), dtype, {"width": int(width), "offset": int(offset)}, {"data": data})


def decode(shape, dtype, params, parts):
    width, offset = int(params["width"]), int(params.get("offset", 0))
    if not 1 <= width <= 16:
        raise ValueError("bitpacked width must be in [1, 16]")
    unpacked = bitpack.unpack_uint(parts["data"].astype(np.uint8).tobytes(), math.prod(shape), width)
    return symbols(unpacked.astype(np.int64) - offset, dtype, shape)


def describe(node: Encoded) -> str:
    return f"{node.params['width']}-bit packed"
