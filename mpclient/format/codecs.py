"""Decoders of the container's codecs (CONTAINER.md), numpy only.

The one implementation of decoding: this reader and the service (`compression.coding.encoding.decode`,
for the in-memory model after each stage and for every container it reads) both call `decode_node`,
so a file decodes bitwise alike in a process without torch and in the worker that verified it.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np

from mpclient.format import bitpack, huffman, sparse_index

assert sys.byteorder == "little", "container parts are little-endian"

# storage name -> numpy dtype of the logical values. numpy has no bfloat16: bfloat16 values are widened to
# float32 (exact: a bfloat16 is the top half of a float32); int4/uint4 are packed two per byte on disk.
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


# ---- codecs ----------------------------------------------------------------------------------------

Decoder = Callable[[tuple, str, dict, dict], np.ndarray]
CODECS: dict[str, Decoder] = {}


def _codec(name: str):
    def register(fn: Decoder) -> Decoder:
        CODECS[name] = fn
        return fn
    return register


def decode_node(codec: str, shape: tuple, dtype: str, params: dict, parts: dict[str, np.ndarray]) -> np.ndarray:
    """One node, its parts already decoded (flat arrays). -> an array of `shape` in `dtype` (see as_dtype)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    out = CODECS[codec](tuple(shape), dtype, params, parts)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{codec} decodes to shape {list(out.shape)}, expected {list(shape)}")
    return out


@_codec("raw")
def _raw(shape, dtype, params, parts):
    return as_dtype(parts["values"], dtype).reshape(shape)


@_codec("cast")
def _cast(shape, dtype, params, parts):
    """Values stored in a narrower float type (fp16/bf16), widened on decode."""
    return as_dtype(parts["values"], dtype).reshape(shape)


def _per_slice(shape: tuple, params: dict, values: np.ndarray) -> np.ndarray:
    """float32 values shaped to broadcast one per slice along `params.axis` (or one for the tensor)."""
    axis = params.get("axis")
    view = [1] * len(shape)
    if axis is not None:
        view[axis] = shape[axis]
    return values.astype(np.float32).reshape(view)


def group_layout(shape: tuple[int, ...], group_size: int) -> tuple[int, int, int]:
    """-> (rows, columns, groups per row) of a group-wise affine tensor: rows are slices along dimension 0
    (one row for a flat tensor), columns everything else flattened; a row's last group may be shorter."""
    numel = math.prod(shape)
    rows = shape[0] if len(shape) > 1 else 1
    cols = numel // rows if rows else 0
    return rows, cols, -(-cols // group_size) if cols else 0


@_codec("affine")
def _affine(shape, dtype, params, parts):
    """value = (code - zero_point) * scale, per tensor, per slice along `axis`, or per `group_size`
    consecutive elements of each row."""
    gs = params.get("group_size")
    if gs is not None:
        if type(gs) is not int or gs < 1:
            raise ValueError("affine group_size must be a positive integer")
        rows, cols, groups = group_layout(shape, gs)
        codes = parts["codes"].astype(np.float32).reshape(rows, cols)

        def expand(t: np.ndarray) -> np.ndarray:
            return np.repeat(t.astype(np.float32).reshape(rows, groups), gs, axis=1)[:, :cols]

        if "zero_points" in parts:
            codes = codes - expand(parts["zero_points"])
        return as_dtype(codes * expand(parts["scales"]), dtype).reshape(shape)
    codes = parts["codes"].reshape(shape).astype(np.float32)
    if "zero_points" in parts:
        codes = codes - _per_slice(shape, params, parts["zero_points"])
    return as_dtype(codes * _per_slice(shape, params, parts["scales"]), dtype)


def _symbols(values: np.ndarray, dtype: str, shape: tuple) -> np.ndarray:
    return values.astype(np.int64).astype(STORAGE[dtype]).reshape(shape)


@_codec("bitpacked")
def _bitpacked(shape, dtype, params, parts):
    """Integers of `params.width` bits packed MSB-first into `data` (uint8); value = symbol - offset."""
    width, offset = int(params["width"]), int(params.get("offset", 0))
    if not 1 <= width <= 16:
        raise ValueError("bitpacked width must be in [1, 16]")
    symbols = bitpack.unpack_uint(parts["data"].astype(np.uint8).tobytes(), math.prod(shape), width)
    return _symbols(symbols.astype(np.int64) - offset, dtype, shape)


@_codec("huffman")
def _huffman(shape, dtype, params, parts):
    """A canonical Huffman stream (huffman.py) in `stream` (uint8); value = symbol - params.offset."""
    numel = math.prod(shape)
    symbols = huffman.decode(parts["stream"].astype(np.uint8).tobytes(), max_count=numel)
    if symbols.size != numel:
        raise ValueError(f"huffman stream holds {symbols.size} symbols, expected {numel}")
    return _symbols(symbols.astype(np.int64) - int(params.get("offset", 0)), dtype, shape)


@_codec("codebook")
def _codebook(shape, dtype, params, parts):
    """Weight sharing: value = centroids[indices] (centroids float32 or float16)."""
    centroids = parts["centroids"].astype(np.float32).reshape(-1)
    indices = parts["indices"].reshape(-1).astype(np.int64)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= centroids.size):
        raise ValueError("codebook index out of range")
    return as_dtype(centroids[indices], dtype).reshape(shape)


@_codec("sign")
def _sign(shape, dtype, params, parts):
    """Binary weights: value = (2 * bit - 1) * scale, one float32 scale per slice along `axis` (or one)."""
    bits = parts["signs"].reshape(shape).astype(np.float32)
    return as_dtype((bits * 2 - 1) * _per_slice(shape, params, parts["scales"]), dtype)


@_codec("sparse")
def _sparse(shape, dtype, params, parts):
    """Pruned tensor: `gaps` are relative indices (sparse_index.py, `params.bits` bits each, the top symbol a
    filler), `values` one value per entry (fillers' values ignored); every other element is zero."""
    values = parts["values"].reshape(-1)
    if values.dtype == np.float16:
        values = values.astype(np.float32)   # widening is exact
    dense, _ = sparse_index.decode(parts["gaps"].astype(np.int64), values, math.prod(shape), int(params["bits"]))
    return as_dtype(dense, dtype).reshape(shape)


@_codec("rows")
def _rows(shape, dtype, params, parts):
    """Row partition (mixed precision across rows): rows whose `selected` flag is 1 come, in order, from `a`,
    the others from `b`; `a` and `b` decode to [their row count, row length] (any codec)."""
    rows = shape[0] if shape else 0
    width = math.prod(shape[1:])
    selected = parts["selected"].reshape(-1).astype(np.int64)
    if selected.size != rows or bool(((selected != 0) & (selected != 1)).any()):
        raise ValueError("rows: `selected` must hold one 0/1 flag per row")
    mask = selected.astype(bool)
    a, b = parts["a"].reshape(-1), parts["b"].reshape(-1)
    if a.size != int(mask.sum()) * width or b.size != int((~mask).sum()) * width:
        raise ValueError("rows: part sizes do not match the selected rows")
    out = np.empty((rows, width), dtype=STORAGE[dtype])
    out[mask] = as_dtype(a.reshape(-1, width), dtype)
    out[~mask] = as_dtype(b.reshape(-1, width), dtype)
    return out.reshape(shape)
