"""Per-tensor encoding records: how one state_dict tensor is stored in the container.

An `Encoded` node names a codec, the decoded tensor's shape and dtype, JSON-able params, and
named parts. A part is either a `Part` (a flat array written as one container member) or
another `Encoded` node, so methods compose: e.g. pruning -> "sparse" node whose `values`
part is a "codebook" node whose `indices` part an entropy stage re-codes.

Invariant: `decode(node)` is the only way tensors are rebuilt, both for the in-memory model
after a stage and when reading a container, so the two are bitwise identical.
"""
from __future__ import annotations

import math

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

assert sys.byteorder == "little", "container parts are little-endian"

# storage name -> torch dtype of the logical values; int4/uint4 are packed two per byte
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool, "int4": torch.int8, "uint4": torch.uint8,
}
PACKED = {"int4", "uint4"}


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


def stored_nbytes(storage: str, numel: int) -> int:
    if storage in PACKED:
        return (numel + 1) // 2
    return numel * STORAGE_DTYPES[storage].itemsize


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


def part_from_bytes(buf: bytes, storage: str, numel: int) -> torch.Tensor:
    if len(buf) != stored_nbytes(storage, numel):
        raise ValueError(f"part holds {len(buf)} bytes, expected {stored_nbytes(storage, numel)}")
    raw = torch.frombuffer(bytearray(buf), dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
    if storage in PACKED:
        nibbles = torch.stack([raw & 0xF, raw >> 4], dim=1).reshape(-1)[:numel]
        if storage == "int4":
            return torch.where(nibbles >= 8, nibbles.to(torch.int8) - 16, nibbles.to(torch.int8))
        return nibbles
    return raw.view(STORAGE_DTYPES[storage]).clone()


# ---- codecs -------------------------------------------------------------------------------

Decoder = Callable[[Encoded, dict[str, torch.Tensor]], torch.Tensor]
CODECS: dict[str, Decoder] = {}


def codec(name: str):
    def register(fn: Decoder) -> Decoder:
        CODECS[name] = fn
        return fn
    return register


@codec("raw")
def _raw(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return parts["values"].reshape(enc.shape)


@codec("cast")
def _cast(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Values stored in a narrower float type (fp16/bf16), widened on decode."""
    return parts["values"].to(STORAGE_DTYPES[enc.dtype]).reshape(enc.shape)


def _per_slice(enc: Encoded, values: torch.Tensor) -> torch.Tensor:
    """float32 values shaped to broadcast one per slice along `params.axis` (or one for the tensor)."""
    axis = enc.params.get("axis")
    view = [1] * len(enc.shape)
    if axis is not None:
        view[axis] = enc.shape[axis]
    return values.to(torch.float32).reshape(view)


@codec("affine")
def _affine(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Integer codes; value = (code - zero_point) * scale, per tensor or per slice along `axis`, or
    per group of `params.group_size` consecutive elements of each row (see `_affine_grouped`)."""
    if enc.params.get("group_size") is not None:
        return _affine_grouped(enc, parts)
    codes = parts["codes"].reshape(enc.shape).to(torch.float32)
    scales = _per_slice(enc, parts["scales"])
    if "zero_points" in parts:
        codes = codes - _per_slice(enc, parts["zero_points"])
    return (codes * scales).to(STORAGE_DTYPES[enc.dtype])


def group_layout(shape: tuple[int, ...], group_size: int) -> tuple[int, int, int]:
    """-> (rows, columns, groups per row) of a group-wise affine tensor: rows are slices along
    dimension 0 (one row for a flat tensor), columns everything else flattened; the last group of
    a row may be shorter when group_size does not divide the columns."""
    numel = 1
    for d in shape:
        numel *= d
    rows = shape[0] if len(shape) > 1 else 1
    cols = numel // rows if rows else 0
    return rows, cols, -(-cols // group_size) if cols else 0


def _affine_grouped(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Group-wise affine: row r, column c uses scale (and zero point) number r * groups + c // group_size."""
    gs = enc.params["group_size"]
    if type(gs) is not int or gs < 1:
        raise ValueError("affine group_size must be a positive integer")
    rows, cols, groups = group_layout(enc.shape, gs)
    codes = parts["codes"].to(torch.float32).reshape(rows, cols)

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float32).reshape(rows, groups).repeat_interleave(gs, dim=1)[:, :cols]

    if "zero_points" in parts:
        codes = codes - expand(parts["zero_points"])
    return (codes * expand(parts["scales"])).reshape(enc.shape).to(STORAGE_DTYPES[enc.dtype])


def decode(enc: Encoded) -> torch.Tensor:
    parts = {k: decode(p) if isinstance(p, Encoded) else p.data for k, p in enc.parts.items()}
    return CODECS[enc.codec](enc, parts)


def raw(tensor: torch.Tensor) -> Encoded:
    """The identity encoding for tensors no stage touched."""
    t = tensor.detach().cpu()
    return Encoded("raw", tuple(t.shape), dtype_name(t.dtype), {}, {"values": Part(t.reshape(-1), dtype_name(t.dtype))})


# ---- Deep Compression codecs (pruning, weight sharing, binarisation, entropy coding) ----------
# Nested nodes decode to flat integer or float arrays; `shape` is the flat length for inner nodes.

def _np(t: torch.Tensor):
    return t.detach().contiguous().reshape(-1).cpu().numpy()


def _int_tensor(values, dtype: str) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.ascontiguousarray(values).astype(np.int64)).to(STORAGE_DTYPES[dtype])


@codec("bitpacked")
def _bitpacked(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Integers of `params.width` bits packed MSB-first into `data` (uint8); value = symbol - offset."""
    from compression.coding import bitpack
    width, offset = int(enc.params["width"]), int(enc.params.get("offset", 0))
    if not 1 <= width <= 16:
        raise ValueError("bitpacked width must be in [1, 16]")
    symbols = bitpack.unpack_uint(_np(parts["data"]).tobytes(), enc.numel, width).astype("int64") - offset
    return _int_tensor(symbols, enc.dtype).reshape(enc.shape)


@codec("huffman")
def _huffman(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """A canonical Huffman stream (compression/coding/huffman.py) in `stream` (uint8);
    value = symbol - params.offset."""
    from compression.coding import huffman
    symbols = huffman.decode(_np(parts["stream"]).tobytes(), max_count=enc.numel)
    if symbols.size != enc.numel:
        raise ValueError(f"huffman stream holds {symbols.size} symbols, expected {enc.numel}")
    return _int_tensor(symbols.astype("int64") - int(enc.params.get("offset", 0)), enc.dtype).reshape(enc.shape)


@codec("codebook")
def _codebook(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Weight sharing: value = centroids[indices] (centroids float32 or float16)."""
    centroids = parts["centroids"].to(torch.float32).reshape(-1)
    indices = parts["indices"].reshape(-1).to(torch.int64)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= centroids.numel()):
        raise ValueError("codebook index out of range")
    return centroids[indices].to(STORAGE_DTYPES[enc.dtype]).reshape(enc.shape)


@codec("sign")
def _sign(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Binary weights: value = (2 * bit - 1) * scale, one float32 scale per slice along `axis` (or one)."""
    bits = parts["signs"].reshape(enc.shape).to(torch.float32)
    scales = _per_slice(enc, parts["scales"])
    return ((bits * 2 - 1) * scales).to(STORAGE_DTYPES[enc.dtype])


@codec("sparse")
def _sparse(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pruned tensor: `gaps` are relative indices (compression/coding/sparse_index.py, `params.bits`
    bits each, the top symbol a filler), `values` one value per entry (fillers' values ignored)."""
    from compression.coding import sparse_index
    gaps = _np(parts["gaps"]).astype("int64")
    values = parts["values"].reshape(-1)
    if values.dtype in (torch.bfloat16, torch.float16):   # numpy has no bfloat16; widening is exact
        values = values.to(torch.float32)
    dense, _ = sparse_index.decode(gaps, _np(values), enc.numel, int(enc.params["bits"]))
    return torch.from_numpy(dense).to(STORAGE_DTYPES[enc.dtype]).reshape(enc.shape)


@codec("rows")
def _rows(enc: Encoded, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Row partition (mixed precision across rows, e.g. frequent tokens of an embedding): rows whose
    `selected` flag is 1 come, in order, from `a`, the others from `b`; `a` and `b` decode to
    [their row count, row length] (any codec)."""
    rows = enc.shape[0] if enc.shape else 0
    width = math.prod(enc.shape[1:])
    selected = parts["selected"].reshape(-1).to(torch.int64)
    if selected.numel() != rows or bool(((selected != 0) & (selected != 1)).any()):
        raise ValueError("rows: `selected` must hold one 0/1 flag per row")
    mask = selected.bool()
    a, b = parts["a"].reshape(-1), parts["b"].reshape(-1)
    if a.numel() != int(mask.sum()) * width or b.numel() != int((~mask).sum()) * width:
        raise ValueError("rows: part sizes do not match the selected rows")
    out = torch.empty(rows, width, dtype=STORAGE_DTYPES[enc.dtype])
    out[mask] = a.reshape(-1, width).to(out.dtype)
    out[~mask] = b.reshape(-1, width).to(out.dtype)
    return out.reshape(enc.shape)


def bitpacked(values, width: int, dtype: str, offset: int = 0) -> Encoded | Part:
    """Pack integers `values + offset` (in [0, 2^width)) `width` bits each; a plain part when width is 8."""
    import numpy as np
    from compression.coding import bitpack
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
