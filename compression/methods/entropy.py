"""Huffman coding (the last Deep Compression stage): re-code the integer parts of every encoding
(codebook indices, sparse gaps, affine codes) with canonical Huffman codes where that saves bytes."""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import Field

from mpclient.format.codecs import huffman
from compression.coding.encoding import Encoded, Part, decode, node_storage
from compression.errors import CompressionError
from compression.stage import CompressionState, MethodSpec, Phase
from compression.data.outputs import bitwise_equal

PartName = Literal["indices", "gaps", "codes"]
_INT_STORAGE = {"uint8", "int8", "int16", "int32", "int4", "uint4"}


class HuffmanSpec(MethodSpec):
    """Entropy-code index-like parts; must be the last stage."""
    phase = Phase.CODING

    kind: Literal["huffman"]
    parts: list[PartName] = Field(["indices", "gaps", "codes"], min_length=1, max_length=3,
                                  description="which parts to re-code: codebook indices, sparse gaps, affine codes")


def _ints(part: Part | Encoded) -> torch.Tensor | None:
    if isinstance(part, Part):
        return part.data.reshape(-1) if part.storage in _INT_STORAGE else None
    return decode(part).reshape(-1) if part.codec == "bitpacked" else None


def huffman_node(values: torch.Tensor, dtype: str) -> Encoded | None:
    coded = huffman.code(values.to(torch.int64).numpy())
    if coded is None:
        return None
    stream, offset = coded
    return huffman.encode(values.numel(), dtype, stream=Part(torch.from_numpy(stream), "uint8"), offset=offset)


def recode(node: Encoded, names: set[str]) -> Encoded:
    parts = {}
    for key, part in node.parts.items():
        if isinstance(part, Encoded) and part.codec not in ("bitpacked", "huffman"):
            part = recode(part, names)
        if key in names:
            values = _ints(part)
            candidate = huffman_node(values, node_storage(part)) if values is not None else None
            if candidate is not None and candidate.nbytes < part.nbytes:
                part = candidate
        parts[key] = part
    return replace(node, parts=parts)


def huffman_stage(spec: HuffmanSpec, state: CompressionState) -> None:
    names = set(spec.parts)
    items = list(state.encodings.items())
    for i, (name, enc) in enumerate(items):
        state.checkpoint(i / max(len(items), 1))
        new = recode(enc, names)
        if not bitwise_equal(decode(new), decode(enc)):   # cannot happen: a lossless re-coding
            raise CompressionError(f"huffman re-coding of {name} does not decode to the same tensor")
        state.encodings[name] = new
    state.checkpoint(1.0)
