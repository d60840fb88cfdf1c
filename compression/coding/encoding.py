"""Per-tensor encoding records: how one state_dict tensor is stored in the container.

An `Encoded` node names a codec, the decoded tensor's shape and dtype, JSON-able params, and
named parts. A part is either a `Part` (a flat array written as one container member) or
another `Encoded` node, so methods compose: e.g. pruning -> "sparse" node whose `values`
part is a "codebook" node whose `indices` part an entropy stage re-codes.

Invariant: `decode(node)` is the only way tensors are rebuilt, both for the in-memory model
after a stage and when reading a container, so the two are bitwise identical. It runs the
torch-free reader's codecs (mpclient/format/codecs.py), so a user's reader agrees bit for bit too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mpclient.format import bitpack, codecs
from mpclient.format.codecs import PACKED, group_layout, stored_nbytes

__all__ = ["Encoded", "PACKED", "Part", "STORAGE_DTYPES", "bitpacked", "decode", "dtype_name", "group_layout",
           "node_storage", "part_to_bytes", "raw", "stored_nbytes", "walk"]

# storage name -> torch dtype of the logical values; int4/uint4 are packed two per byte
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool, "int4": torch.int8, "uint4": torch.uint8,
}


@dataclass(frozen=True)
class Part:
    data: torch.Tensor   # logical values (int4 codes as int8 in [-8, 7])
    storage: str

    @property
    def numel(self) -> int:
        return self.data.numel()

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.storage, self.numel)


@dataclass(frozen=True)
class Encoded:
    codec: str
    shape: tuple[int, ...]
    dtype: str                                   # torch dtype name of the decoded tensor
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


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def part_to_bytes(part: Part) -> bytes:
    flat = part.data.detach().contiguous().reshape(-1).cpu()
    if part.storage in PACKED:
        nibbles = (flat.to(torch.int16) & 0xF).to(torch.uint8)
        if nibbles.numel() % 2:
            nibbles = torch.cat([nibbles, nibbles.new_zeros(1)])
        return (nibbles[0::2] | (nibbles[1::2] << 4)).numpy().tobytes()
    flat = flat.to(STORAGE_DTYPES[part.storage])
    if flat.dtype == torch.bfloat16:   # numpy has no bfloat16
        flat = flat.view(torch.int16)
    return flat.numpy().tobytes()


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A part's values for the numpy codecs (bfloat16 widened to float32: exact)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def decode(enc: Encoded) -> torch.Tensor:
    parts = {k: _numpy(decode(p)) if isinstance(p, Encoded) else _numpy(p.data) for k, p in enc.parts.items()}
    values = codecs.decode_node(enc.codec, enc.shape, enc.dtype, enc.params, parts)
    # bfloat16 comes back as float32 holding bfloat16 values: the cast below is exact
    return torch.from_numpy(np.array(values, copy=True)).to(STORAGE_DTYPES[enc.dtype])


def raw(tensor: torch.Tensor) -> Encoded:
    """The identity encoding for tensors no stage touched."""
    t = tensor.detach().cpu()
    return Encoded("raw", tuple(t.shape), dtype_name(t.dtype), {}, {"values": Part(t.reshape(-1), dtype_name(t.dtype))})


def bitpacked(values, width: int, dtype: str, offset: int = 0) -> Encoded | Part:
    """Pack integers `values + offset` (in [0, 2^width)) `width` bits each; a plain part when width is 8."""
    v = (values.reshape(-1).to(torch.int64).numpy() if isinstance(values, torch.Tensor)
         else np.asarray(values).reshape(-1).astype(np.int64))
    if width == 8 and offset == 0 and dtype == "uint8":
        return Part(torch.from_numpy(v.astype(np.uint8)), "uint8")
    data = np.frombuffer(bitpack.pack_uint(v + offset, width), dtype=np.uint8).copy()
    return Encoded("bitpacked", (int(v.size),), dtype, {"width": int(width), "offset": int(offset)},
                   {"data": Part(torch.from_numpy(data), "uint8")})


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
