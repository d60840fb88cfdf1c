"""Integer grids shared by `quantize` (round to nearest) and `gptq` (error-compensating): scales
(and zero points) per output row or per group of consecutive input columns, codes, and the
`affine` encoding node (CONTAINER.md: group-wise affine)."""
from __future__ import annotations

import torch

from compression.coding.encoding import Encoded, Part, bitpacked, group_layout
from mpclient.format.codecs import affine


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)


def grid(x: torch.Tensor, bits: int, symmetric: bool, scale_storage: str
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (rounded to its storage type, as float32) and zero point (float, or None) per row of `x`."""
    x = x.float()
    lo_code, hi_code = code_range(bits, symmetric)
    if symmetric:
        scales = x.abs().amax(dim=1) / hi_code
    else:
        lo, hi = x.amin(dim=1).clamp(max=0), x.amax(dim=1).clamp(min=0)   # range must hold 0
        scales = (hi - lo) / hi_code
    scales = scales.to(getattr(torch, scale_storage)).to(torch.float32)
    if not symmetric:
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        return scales, torch.round(-lo / safe).clamp(0, hi_code)
    return scales, None


def mse_grid(x: torch.Tensor, bits: int, symmetric: bool, scale_storage: str, weights: torch.Tensor | None = None,
             shrink: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`grid` with its range shrunk per row by the factor that minimises the (column-`weights`ed) squared
    rounding error: clipping a few outliers buys finer steps for every other weight."""
    x = x.float()
    best_err = torch.full((x.shape[0],), float("inf"))
    best_s, best_z = grid(x, bits, symmetric, scale_storage)
    w = torch.ones(x.shape[1]) if weights is None else weights.float()
    for factor in shrink:
        s, z = grid(x * factor, bits, symmetric, scale_storage)   # grid of the shrunk range, applied to x
        err = ((x - dequant(to_codes(x, s, z, bits, symmetric), s, z)) ** 2 * w).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        if best_z is not None:
            best_z = torch.where(better, z, best_z)
    return best_s, best_z


def to_codes(x: torch.Tensor, scales: torch.Tensor, zero: torch.Tensor | None, bits: int, symmetric: bool
             ) -> torch.Tensor:
    """Round-to-nearest codes of `x` ([rows, k]) for per-row `scales` / `zero` ([rows])."""
    lo, hi = code_range(bits, symmetric)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))[:, None]
    q = torch.round(x.float() / safe)
    if zero is not None:
        q = q + zero[:, None]
    return q.clamp(lo, hi)


def dequant(codes: torch.Tensor, scales: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """Exactly the codec's arithmetic (float32)."""
    c = codes.float()
    if zero is not None:
        c = c - zero.float()[:, None]
    return c * scales.float()[:, None]


def codes_part(codes: torch.Tensor, bits: int, symmetric: bool) -> Part | Encoded:
    """Flat codes in the narrowest storage: int8/uint8, int4/uint4, else bit-packed with an offset."""
    codes = codes.reshape(-1).to(torch.int64)
    if bits in (8, 4):
        storage = ("int" if symmetric else "uint") + str(bits)
        return Part(codes.to(torch.int8 if symmetric else torch.uint8), storage)
    lo, _ = code_range(bits, symmetric)
    return bitpacked(codes, bits, "int8" if symmetric else "uint8", offset=-lo)


def zero_part(zero: torch.Tensor, bits: int) -> Part:
    return Part(zero.reshape(-1).to(torch.uint8), "uint4" if bits == 4 else "uint8")


def affine_node(shape: tuple[int, ...], out_dtype: str, codes: torch.Tensor, scales: torch.Tensor,
                zero: torch.Tensor | None, bits: int, symmetric: bool, group_size: int | None,
                scale_storage: str) -> Encoded:
    """An `affine` node; `scales`/`zero` hold one value per row (group_size None) or per group, row-major."""
    return affine.encode(
        tuple(shape), out_dtype, codes=codes_part(codes, bits, symmetric),
        scales=Part(scales.reshape(-1).to(getattr(torch, scale_storage)), scale_storage),
        zero_points=None if zero is None else zero_part(zero, bits), bits=bits,
        axis=0 if len(shape) > 1 or group_size is not None else None, symmetric=symmetric,
        group_size=None if group_size is None else int(group_size))


def round_to_nearest(w: torch.Tensor, out_dtype: str, bits: int, symmetric: bool, group_size: int | None,
                     scale_storage: str) -> Encoded:
    """Round-to-nearest group-wise (or per-row when group_size is None) affine encoding of `w`."""
    gs = group_size
    rows, cols, _ = group_layout(tuple(w.shape), gs if gs is not None else max(w.numel(), 1))
    x = w.detach().float().reshape(rows, cols)
    if gs is None:
        scales, zero = grid(x, bits, symmetric, scale_storage)
        codes = to_codes(x, scales, zero, bits, symmetric)
        node = affine_node(tuple(w.shape), out_dtype, codes, scales, zero, bits, symmetric, None, scale_storage)
        return node
    groups = -(-cols // gs)
    pad = groups * gs - cols   # zero padding never widens a group's range (every grid holds 0)
    flat = (torch.nn.functional.pad(x, (0, pad)) if pad else x).reshape(rows * groups, gs)
    scales, zero = grid(flat, bits, symmetric, scale_storage)
    codes = to_codes(flat, scales, zero, bits, symmetric).reshape(rows, groups * gs)[:, :cols]
    return affine_node(tuple(w.shape), out_dtype, codes, scales, zero, bits, symmetric, gs, scale_storage)

