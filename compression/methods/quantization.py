"""Weight-only quantization: fp16/bf16 casts, int8/int4 affine codes, binary (sign x per-channel
scale, XNOR-Net), ternary (TWN) and 16-bit fixed point (Qm.n).

The model keeps floating weights equal to the decoded encoding (so everything downstream
runs unchanged); the encoding record carries the codes the container stores.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from compression.coding.encoding import Encoded, Part, bitpacked, decode, dtype_name
from mpclient.format.codecs import affine, cast, sign
from compression.errors import CompressionError
from compression.methods.groupwise import round_to_nearest
from compression.stage import CompressionState, MethodSpec, Phase, encode_weight, pattern_matches, select_targets

_FLOAT_STORAGE = {"fp16": "float16", "bf16": "bfloat16"}
_BITS = {"int8": 8, "int4": 4, "int3": 3}
IntDtype = Literal["int8", "int4", "int3"]
Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class QuantizeSpec(MethodSpec):
    """Weight-only quantization of Linear, Conv and (optionally) Embedding weights."""
    phase = Phase.VALUES

    kind: Literal["quantize"]
    dtype: Literal["fp16", "bf16", "int8", "int4", "int3", "binary", "ternary", "fixed16"] = Field(
        description="fp16/bf16: cast; int8/int4/int3: integer codes with float32 (or float16) scales; binary: sign x mean|w| "
                    "per output channel (1 bit); ternary: {-a, 0, a} per channel with threshold 0.7 mean|w| "
                    "(TWN, 2 bits); fixed16: int16 codes x 2^-frac_bits per tensor")
    granularity: Literal["per_channel", "per_tensor"] | None = Field(
        None, description="int only: one scale per output channel (default) or per tensor")
    symmetric: bool = Field(True, description="int only: codes in [-(2^(b-1)-1), 2^(b-1)-1] and no zero point; "
                                              "false: unsigned codes with a per-scale zero point")
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=256,
                               description="glob patterns of layer or tensor names to leave in float32, "
                                           "e.g. [\"fc3\", \"features.0.*\"]; each must match a layer")
    include_embeddings: bool = Field(True, description="also quantize nn.Embedding weights")
    group_size: int | None = Field(None, ge=1, le=65536, description="int only: one scale (and zero point) per "
                                   "group of this many consecutive input-dimension weights of each output row "
                                   "(e.g. 32/64/128) instead of one per row; a row's last group may be shorter")
    scale_dtype: Literal["float32", "float16"] | None = Field(
        None, description="int only: storage of the scales; default float16 with group_size, else float32")
    layers: dict[Pattern, IntDtype] = Field(default_factory=dict, max_length=256,
                                            description="int only: per-layer dtype overrides, glob pattern -> "
                                                        "int8/int4/int3 (mixed precision); first match wins")
    frac_bits: int | None = Field(None, ge=0, le=24, description="fixed16 only: fractional bits n of Qm.n; "
                                  "default: the most that keeps each tensor's largest weight in range")

    @model_validator(mode="after")
    def _int_only_options(self):
        # non-default values only, so a dumped spec parses again
        if self.dtype not in _BITS and (self.granularity is not None or not self.symmetric
                                        or self.group_size is not None or self.scale_dtype is not None or self.layers):
            raise ValueError("granularity, symmetric, group_size, scale_dtype and layers apply to int8/int4/int3 only")
        if self.group_size is not None and self.granularity == "per_tensor":
            raise ValueError("group_size needs per-channel granularity (groups split each output row)")
        if self.dtype != "fixed16" and self.frac_bits is not None:
            raise ValueError("frac_bits applies to fixed16 only")
        return self

    @property
    def axis(self) -> int | None:
        return None if self.granularity == "per_tensor" else 0


    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{field} pattern {p!r} matches no layer of the model"
                for field, pats in (("exclude", self.exclude), ("layers", list(self.layers)))
                for p in pats if not pattern_matches(p, layer_names)]

    def dtype_for(self, name: str) -> str:
        return next((d for p, d in self.layers.items() if pattern_matches(p, [name])), self.dtype)


def _cast(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    storage = _FLOAT_STORAGE[spec.dtype]
    values = w.to(getattr(torch, storage))
    if torch.isinf(values).any():
        raise CompressionError(f"weights exceed the {spec.dtype} range; use bf16 or int8")
    return cast.encode(tuple(w.shape), out_dtype, Part(values.reshape(-1), storage))


def _affine(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str, dtype: str | None = None) -> Encoded:
    bits, axis = _BITS[dtype or spec.dtype], spec.axis if w.ndim > 1 else None
    if spec.group_size is not None or bits not in (8, 4) or spec.scale_dtype == "float16":
        if axis is None and w.ndim > 1:   # per_tensor: the whole tensor is one row
            enc = round_to_nearest(w.reshape(-1), out_dtype, bits, spec.symmetric, None, spec.scale_dtype or "float32")
            return replace(enc, shape=tuple(w.shape))
        storage = spec.scale_dtype or ("float16" if spec.group_size is not None else "float32")
        return round_to_nearest(w, out_dtype, bits, spec.symmetric, spec.group_size, storage)
    w = w.float()
    rows = w.reshape(w.shape[0], -1) if axis == 0 else w.reshape(1, -1)
    view = (-1,) + (1,) * (w.ndim - 1) if axis == 0 else (1,) * w.ndim
    zero_points = None
    if spec.symmetric:
        qmax = 2 ** (bits - 1) - 1
        scales = rows.abs().amax(dim=1) / qmax
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(w / safe.reshape(view)).clamp(-qmax, qmax).to(torch.int8)
        storage = "int8" if bits == 8 else "int4"
    else:
        qmax = 2 ** bits - 1
        lo, hi = rows.amin(dim=1).clamp(max=0), rows.amax(dim=1).clamp(min=0)   # range must hold 0
        scales = (hi - lo) / qmax
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        zero = torch.round(-lo / safe).clamp(0, qmax)
        codes = (torch.round(w / safe.reshape(view)) + zero.reshape(view)).clamp(0, qmax).to(torch.uint8)
        storage = "uint8" if bits == 8 else "uint4"
        zero_points = Part(zero.to(torch.uint8), storage)
    return affine.encode(tuple(w.shape), out_dtype, codes=Part(codes.reshape(-1), storage),
                         scales=Part(scales, "float32"), zero_points=zero_points, bits=bits, axis=axis,
                         symmetric=spec.symmetric)


def _rows(w: torch.Tensor) -> tuple[torch.Tensor, int | None, tuple]:
    """Per-output-channel rows for a dense weight; a flat tensor (sparse entries) is one row."""
    if w.ndim > 1:
        return w.reshape(w.shape[0], -1), 0, (-1,) + (1,) * (w.ndim - 1)
    return w.reshape(1, -1), None, (1,)


def _nonzero_abs_mean(rows: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    count = where.sum(dim=1)
    return torch.where(count > 0, (rows.abs() * where).sum(dim=1) / count.clamp(min=1), torch.zeros(()))


def _binary(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    """XNOR-Net: sign(w) x mean|w| per output channel (zeros of sparse entries left out of the mean)."""
    w = w.float()
    rows, axis, _ = _rows(w)
    scales = _nonzero_abs_mean(rows, rows != 0 if axis is None else torch.ones_like(rows, dtype=torch.bool))
    signs = bitpacked((w.reshape(-1) >= 0).to(torch.int64), 1, "uint8")
    return sign.encode(tuple(w.shape), out_dtype, signs=signs, scales=Part(scales, "float32"), axis=axis)


def _ternary(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    """TWN: threshold 0.7 mean|w| and scale mean|w| over the weights above it, per output channel."""
    w = w.float()
    rows, axis, view = _rows(w)
    nonzero = rows != 0 if axis is None else torch.ones_like(rows, dtype=torch.bool)
    delta = 0.7 * _nonzero_abs_mean(rows, nonzero)
    big = (rows.abs() > delta[:, None]) & nonzero
    scales = _nonzero_abs_mean(rows, big)
    codes = (torch.sign(rows) * big).to(torch.int64).reshape(-1)
    return affine.encode(tuple(w.shape), out_dtype, codes=bitpacked(codes, 2, "int8", offset=1),
                         scales=Part(scales, "float32"), bits=2, axis=axis, ternary=True)


def _fixed16(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    """Qm.n: int16 codes, value = code x 2^-n, n chosen per tensor unless the spec fixes it."""
    w = w.float()
    peak = float(w.abs().max()) if w.numel() else 0.0
    n = spec.frac_bits
    if n is None:
        n = 24 if peak == 0 else max(0, min(24, math.floor(math.log2(32767 / peak))))
    codes = torch.round(w * 2.0 ** n).clamp(-32768, 32767).to(torch.int16)
    return affine.encode(tuple(w.shape), out_dtype, codes=Part(codes.reshape(-1), "int16"),
                         scales=Part(torch.tensor([2.0 ** -n]), "float32"), bits=16, axis=None, frac_bits=n)


_ENCODERS = {"fp16": _cast, "bf16": _cast, "int8": _affine, "int4": _affine, "int3": _affine, "binary": _binary,
             "ternary": _ternary, "fixed16": _fixed16}
_VALUE_BITS = {"fp16": 16, "bf16": 16, "int8": 8, "int4": 4, "int3": 3, "binary": 1, "ternary": 2, "fixed16": 16}


def quantized_weight(w: torch.Tensor, spec: QuantizeSpec, dtype: str) -> tuple[torch.Tensor, int]:
    """`w` as an int `dtype` layer of `spec` would store it: (decoded values, stored bytes). For measuring
    one layer's sensitivity without running a stage."""
    enc = _affine(w.detach(), spec, dtype_name(w.dtype), dtype)
    return decode(enc).to(w.dtype), enc.nbytes


def quantize(spec: QuantizeSpec, state: CompressionState) -> None:
    chosen = select_targets(state, spec.exclude, spec.include_embeddings, "quantize")
    encode = _ENCODERS[spec.dtype]
    for i, target in enumerate(chosen):
        state.checkpoint(i / len(chosen))
        out_dtype, dtype = dtype_name(target.param.dtype), spec.dtype_for(target.name)
        if dtype != spec.dtype:
            encode_weight(state, target, lambda w, o=out_dtype, d=dtype: _affine(w, spec, o, d), _VALUE_BITS[dtype])
            continue
        encode_weight(state, target, lambda w, out_dtype=out_dtype: encode(w, spec, out_dtype), _VALUE_BITS[spec.dtype])
    state.checkpoint(1.0)
