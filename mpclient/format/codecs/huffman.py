"""`huffman`: a canonical Huffman stream (mpclient/format/huffman.py) in `stream` (uint8);
value = symbol - offset. Entropy coding of index-like parts (Deep Compression's last stage)."""
from __future__ import annotations

import math

import numpy as np

from mpclient.format import huffman as coder
from mpclient.format.codecs._shared import symbols
from mpclient.format.nodes import Encoded, Part

NAME = "huffman"


def code(values: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(the `stream` part's uint8 bytes, offset) of integer `values`, or None where they cannot be coded
    (empty, or an alphabet over huffman.MAX_ALPHABET)."""
    v = np.asarray(values).reshape(-1).astype(np.int64)
    if v.size == 0:
        return None
    offset = max(0, -int(v.min()))
    alphabet = int(v.max()) + offset + 1
    if alphabet > coder.MAX_ALPHABET:
        return None
    return np.frombuffer(coder.encode(v + offset, alphabet), dtype=np.uint8).copy(), offset


def encode(count: int, dtype: str, *, stream: Part, offset: int) -> Encoded:
    return Encoded(NAME, (int(count),), dtype, {"offset": int(offset)}, {"stream": stream})


def decode(shape, dtype, params, parts):
    numel = math.prod(shape)
    decoded = coder.decode(parts["stream"].astype(np.uint8).tobytes(), max_count=numel)
    if decoded.size != numel:
        raise ValueError(f"huffman stream holds {decoded.size} symbols, expected {numel}")
    return symbols(decoded.astype(np.int64) - int(params.get("offset", 0)), dtype, shape)


def describe(node: Encoded) -> str:
    return "huffman"
