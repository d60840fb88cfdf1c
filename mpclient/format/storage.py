"""How a part's values lie on disk: storage types, their byte sizes, and bytes -> numpy (little-endian).

int4/uint4 are packed two per byte (element 2i in the low nibble); numpy has no bfloat16, so bfloat16
values are widened to float32 (exact: a bfloat16 is the top half of a float32).
"""
from __future__ import annotations

import sys

import numpy as np

assert sys.byteorder == "little", "container parts are little-endian"

# storage name -> numpy dtype of the logical values
STORAGE: dict[str, type] = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.float32,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
    "int4": np.int8, "uint4": np.uint8,
}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
            "uint8": 1, "bool": 1}
PACKED = frozenset({"int4", "uint4"})


def stored_nbytes(storage: str, numel: int) -> int:
    return (numel + 1) // 2 if storage in PACKED else numel * ITEMSIZE[storage]


def part_from_bytes(buf: bytes, storage: str, numel: int) -> np.ndarray:
    """A part's little-endian bytes as a flat array of its logical values (int4: int8 in [-8, 7])."""
    if len(buf) != stored_nbytes(storage, numel):
        raise ValueError(f"part holds {len(buf)} bytes, expected {stored_nbytes(storage, numel)}")
    raw = np.frombuffer(buf, dtype=np.uint8)
    if storage in PACKED:   # element 2i in the low nibble
        nibbles = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1)[:numel]
        return np.where(nibbles >= 8, nibbles.astype(np.int8) - 16, nibbles).astype(np.int8) \
            if storage == "int4" else nibbles.astype(np.uint8)
    if storage == "bfloat16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.view(STORAGE[storage]).copy()


def round_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32: what a cast to
    bfloat16 gives, for readers without that dtype."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    rounded = np.where(np.isnan(values), np.uint32(0x7FC00000), rounded)
    return rounded.astype(np.uint32).view(np.float32)


def as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` as the decoded tensor's dtype (bfloat16: float32 holding bfloat16 values)."""
    if dtype == "bfloat16":
        return round_bfloat16(values.astype(np.float32))
    return values.astype(STORAGE[dtype], copy=False)
