"""Encoding nodes: how one tensor is stored.

An `Encoded` node names a codec (a module of `mpclient.format.codecs`), the decoded tensor's shape and dtype,
JSON-able params and named parts. A part is either a `Part` (a flat array written as one run of bytes) or
another node, so codecs compose: a "sparse" node's `values` may be a "codebook" node whose `indices` an
entropy stage re-codes as "huffman". Nodes are built only by the codecs' `encode` functions, so a node's
layout is written down once, beside its decoder.

Framework-free: a part's `data` is whatever array the writer holds (torch tensors in the service); only its
`shape` is read here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mpclient.format.storage import stored_nbytes


@dataclass(frozen=True)
class Part:
    data: Any      # flat array of logical values (int4 codes as int8 in [-8, 7])
    storage: str   # a `storage.STORAGE` name: how the values lie on disk

    @property
    def numel(self) -> int:
        return math.prod(self.data.shape)

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.storage, self.numel)


@dataclass(frozen=True)
class Encoded:
    codec: str
    shape: tuple[int, ...]
    dtype: str                                   # dtype name of the decoded tensor ("float32", "bfloat16", ...)
    params: dict = field(default_factory=dict)   # JSON-able
    parts: dict[str, Part | Encoded] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())

    def bits_per_element(self) -> float:
        """Stored bits per weight, scales/zero points/indices included."""
        return 8 * self.nbytes / max(self.numel, 1)


def node_storage(part: Part | Encoded) -> str:
    """Logical dtype of a part or node's decoded values."""
    return part.dtype if isinstance(part, Encoded) else ("int8" if part.storage == "int4" else
                                                         "uint8" if part.storage == "uint4" else part.storage)


def walk(enc: Encoded, prefix: str = ""):
    """Yield (path, node) for a node and its nested nodes."""
    yield prefix, enc
    for k, p in enc.parts.items():
        if isinstance(p, Encoded):
            yield from walk(p, f"{prefix}{k}.")
