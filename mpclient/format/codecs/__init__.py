"""The container's codecs: one module per codec, each the one home of that codec's
`encode` (the node's layout: which params, which parts in which storage), `decode` (numpy), and
`describe` (its name in a job's per-layer report). CONTAINER.md documents the same layouts for readers.

The service decodes with these functions too (`compression.coding.encoding.decode`, for the in-memory
model after each stage and for every container it reads), so a file decodes bitwise alike in a process
without torch and in the worker that verified it. Nothing here imports torch: `encode` only arranges parts
the caller built (torch tensors in the service), `decode` is numpy.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from mpclient.format.codecs import affine, bitpacked, cast, codebook, huffman, raw, rows, sign, sparse
from mpclient.format.nodes import Encoded

CODECS: dict[str, ModuleType] = {m.NAME: m for m in (raw, cast, affine, sign, codebook, sparse, rows, bitpacked,
                                                     huffman)}


def decode_node(codec: str, shape: tuple, dtype: str, params: dict, parts: dict[str, np.ndarray]) -> np.ndarray:
    """One node, its parts already decoded (flat arrays). -> an array of `shape` in `dtype` (see storage.as_dtype)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    out = CODECS[codec].decode(tuple(shape), dtype, params, parts)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{codec} decodes to shape {list(out.shape)}, expected {list(shape)}")
    return out


def describe(node: Encoded) -> str:
    """A short human name of the encoding ("int8 per_channel symmetric +huffman")."""
    return CODECS[node.codec].describe(node) if node.codec in CODECS else node.codec


def details(node: Encoded) -> dict:
    """Codec-specific figures for the per-layer report (index overhead, codebook size); {} for most codecs."""
    module = CODECS.get(node.codec)
    return module.details(node) if hasattr(module, "details") else {}
