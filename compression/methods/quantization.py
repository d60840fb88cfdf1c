"""Weight-only quantization: fp16/bf16 casts and int8/int4 affine codes.

The model keeps floating weights equal to the decoded encoding (so everything downstream
runs unchanged); the encoding record carries the codes the container stores.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from compression.encoding import Encoded, Part, decode, dtype_name
from compression.errors import CompressionError
from compression.methods.base import CompressionState, MethodSpec, Phase, pattern_matches, weight_targets

_FLOAT_STORAGE = {"fp16": "float16", "bf16": "bfloat16"}
_BITS = {"int8": 8, "int4": 4}


class QuantizeSpec(MethodSpec):
    """Weight-only quantization of Linear, Conv and (optionally) Embedding weights."""
    phase = Phase.VALUES

    kind: Literal["quantize"]
    dtype: Literal["fp16", "bf16", "int8", "int4"] = Field(
        description="fp16/bf16: cast; int8/int4: integer codes with float32 scales")
    granularity: Literal["per_channel", "per_tensor"] | None = Field(
        None, description="int only: one scale per output channel (default) or per tensor")
    symmetric: bool = Field(True, description="int only: codes in [-(2^(b-1)-1), 2^(b-1)-1] and no zero point; "
                                              "false: unsigned codes with a per-scale zero point")
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=256,
                               description="glob patterns of layer or tensor names to leave in float32, "
                                           "e.g. [\"fc3\", \"features.0.*\"]; each must match a layer")
    include_embeddings: bool = Field(True, description="also quantize nn.Embedding weights")

    @model_validator(mode="after")
    def _int_only_options(self):
        # non-default values only, so a dumped spec parses again
        if self.dtype in _FLOAT_STORAGE and (self.granularity is not None or not self.symmetric):
            raise ValueError("granularity and symmetric apply to int8/int4 only")
        return self

    @property
    def axis(self) -> int | None:
        return None if self.granularity == "per_tensor" else 0

    def describe(self) -> str:
        if self.dtype in _FLOAT_STORAGE:
            return self.dtype
        return f"{self.dtype} {self.granularity or 'per_channel'} {'symmetric' if self.symmetric else 'asymmetric'}"

    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"exclude pattern {p!r} matches no layer of the model" for p in self.exclude
                if not pattern_matches(p, layer_names)]


def _cast(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    storage = _FLOAT_STORAGE[spec.dtype]
    values = w.to(getattr(torch, storage))
    if torch.isinf(values).any():
        raise CompressionError(f"weights exceed the {spec.dtype} range; use bf16 or int8")
    return Encoded("cast", tuple(w.shape), out_dtype, {}, {"values": Part(values.reshape(-1), storage)})


def _affine(w: torch.Tensor, spec: QuantizeSpec, out_dtype: str) -> Encoded:
    bits, axis = _BITS[spec.dtype], spec.axis
    w = w.float()
    rows = w.reshape(w.shape[0], -1) if axis == 0 else w.reshape(1, -1)
    view = (-1,) + (1,) * (w.ndim - 1) if axis == 0 else (1,) * w.ndim
    parts = {}
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
        parts["zero_points"] = Part(zero.to(torch.uint8), storage)
    parts["codes"] = Part(codes.reshape(-1), storage)
    parts["scales"] = Part(scales, "float32")
    params = {"bits": bits, "axis": axis, "symmetric": spec.symmetric}
    return Encoded("affine", tuple(w.shape), out_dtype, params, parts)


def quantize(spec: QuantizeSpec, state: CompressionState) -> None:
    targets = weight_targets(state.model)
    names = list(state.model.state_dict().keys())
    for problem in spec.check_against(names):
        raise CompressionError(problem)
    chosen = [t for t in targets
              if not any(pattern_matches(p, [t.name]) for p in spec.exclude)
              and (spec.include_embeddings or t.module_type != "Embedding")]
    if not chosen:
        raise CompressionError("the quantize stage selects no Linear/Conv/Embedding weight")
    encode = _cast if spec.dtype in _FLOAT_STORAGE else _affine
    for i, target in enumerate(chosen):
        state.checkpoint(i / len(chosen))
        if target.name in state.encodings:
            raise CompressionError(f"{target.name} is already encoded by an earlier stage")
        w = target.param.detach()
        if not torch.isfinite(w).all():
            raise CompressionError(f"{target.name} holds NaN or infinite values")
        enc = encode(w, spec, dtype_name(w.dtype))
        with torch.no_grad():
            target.param.copy_(decode(enc))   # the model holds exactly what the container will decode
        state.encodings[target.name] = enc
    state.checkpoint(1.0)
