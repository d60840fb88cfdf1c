"""`affine`: value = (code - zero_point) * scale, one scale (and zero point) for the tensor, per slice along
`axis`, or per `group_size` consecutive elements of each row.

Params: bits, axis, symmetric; group_size (group-wise; axis 0); ternary (TWN codes in {-1, 0, 1}) and
frac_bits (fixed point, scale 2^-frac_bits) only name the variant in reports. Parts: codes, scales,
zero_points (asymmetric only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpclient.format.codecs._shared import coded_suffix, per_slice
from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "affine"


def encode(shape: tuple[int, ...], dtype: str, *, codes: Part | Encoded, scales: Part,
           zero_points: Part | Encoded | None = None, bits: int, axis: int | None, symmetric: bool = True,
           group_size: int | None = None, ternary: bool = False, frac_bits: int | None = None) -> Encoded:
    if group_size is not None and (type(group_size) is not int or group_size < 1 or axis != 0):
        raise ValueError("group_size must be a positive integer, with axis 0")
    params: dict = {"bits": int(bits), "axis": axis, "symmetric": bool(symmetric)}
    if group_size is not None:
        params["group_size"] = group_size
    if ternary:
        params["ternary"] = True
    if frac_bits is not None:
        params["frac_bits"] = int(frac_bits)
    parts = {"codes": codes, "scales": scales}
    if zero_points is not None:
        parts["zero_points"] = zero_points
    return Encoded(NAME, tuple(shape), dtype, params, parts)


def group_layout(shape: tuple[int, ...], group_size: int) -> tuple[int, int, int]:
    """-> (rows, columns, groups per row) of a group-wise tensor: rows are slices along dimension 0 (one row
    for a flat tensor), columns everything else flattened; a row's last group may be shorter."""
    numel = math.prod(shape)
    rows = shape[0] if len(shape) > 1 else 1
    cols = numel // rows if rows else 0
    return rows, cols, -(-cols // group_size) if cols else 0


@dataclass(frozen=True)
class Grid:
    """A tensor as integers on a grid, value = (codes - zero_points) * scales: the form integer kernels take.
    The runnable exports (ONNX DequantizeLinear, compressed-tensors, the compact torch program) translate a
    grid and never read a codec's parts."""
    codes: np.ndarray                # int64, in the tensor's shape
    scales: np.ndarray               # float32, flat: one (per tensor), one per slice along `axis`, or one per
    zero_points: np.ndarray | None   # group of each row (row-major); zero points likewise, as stored
    axis: int | None
    group_size: int | None
    bits: int
    symmetric: bool


def grid(shape, params, parts) -> Grid:
    """The node's grid, its parts already decoded (flat arrays)."""
    zero = parts.get("zero_points")
    return Grid(parts["codes"].reshape(shape).astype(np.int64), parts["scales"].astype(np.float32).reshape(-1),
                None if zero is None else zero.reshape(-1), params.get("axis"), params.get("group_size"),
                int(params["bits"]), bool(params.get("symmetric", True)))


def decode(shape, dtype, params, parts):
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
        codes = codes - per_slice(shape, params, parts["zero_points"])
    return as_dtype(codes * per_slice(shape, params, parts["scales"]), dtype)


def describe(node: Encoded) -> str:
    p, coded = node.params, coded_suffix(node)
    if p.get("ternary"):
        return f"ternary {'per_tensor' if p.get('axis') is None else 'per_channel'}{coded}"
    if "frac_bits" in p:
        return f"fixed16 x2^-{p['frac_bits']}{coded}"
    layout = f"group {p['group_size']}" if p.get("group_size") else \
        "per_tensor" if p.get("axis") is None else "per_channel"
    return f"int{p['bits']} {layout} {'symmetric' if p.get('symmetric', True) else 'asymmetric'}{coded}"
