"""Fixed-width bit packing and a bounds-checked byte reader.

Shared by the coders' headers. Bits are packed MSB-first so a packed field
reads left to right the way it is written.
"""
from __future__ import annotations

import struct

import numpy as np

MAX_WIDTH = 32


def packed_size(count: int, width: int) -> int:
    """Bytes used by `count` values of `width` bits."""
    return (count * width + 7) // 8


def bit_width(max_value: int) -> int:
    """Bits needed to store every integer in [0, max_value]."""
    return int(max_value).bit_length()


def pack_uint(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers < 2**width, `width` bits each, MSB-first."""
    if not 0 <= width <= MAX_WIDTH:
        raise ValueError(f"bit width {width} outside [0, {MAX_WIDTH}]")
    v = np.asarray(values, dtype=np.uint64).ravel()
    if width == 0 or v.size == 0:
        if v.size and v.max() != 0:
            raise ValueError("non-zero value with bit width 0")
        return b""
    if v.max() >> np.uint64(width):
        raise ValueError(f"value does not fit in {width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((v[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_uint(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """Inverse of pack_uint; `data` must hold exactly packed_size(count, width) bytes."""
    if not 0 <= width <= MAX_WIDTH:
        raise ValueError(f"bit width {width} outside [0, {MAX_WIDTH}]")
    if len(data) != packed_size(count, width):
        raise ValueError("packed field has the wrong length")
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * width)
    weights = np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64)
    return bits.reshape(count, width).astype(np.uint64) @ weights


class Reader:
    """Sequential little-endian reader that raises ValueError instead of over-reading."""

    def __init__(self, data: bytes | memoryview):
        self.view = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.view) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise ValueError("stream truncated")
        out = self.view[self.pos:self.pos + n]
        self.pos += n
        return out

    def _unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def u8(self) -> int:
        return self._unpack("<B")

    def u32(self) -> int:
        return self._unpack("<I")

    def u64(self) -> int:
        return self._unpack("<Q")
