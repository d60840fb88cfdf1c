"""model.compact.pt2: a torch.export program whose weights stay as the compression left them.

Linear and Conv2d layers whose container encoding is integer codes + scales (`affine`: per channel or in
groups) or a codebook (weight sharing) become small modules that hold the codes as int8/uint8 buffers (4-bit
codes packed two per byte) and rebuild the float weight inside the graph with the container's own
arithmetic ((code - zero point) * scale, or table[index]), so the program is bitwise the compressed model
and `torch.export.load(path).module()` runs it in plain torch. Chosen over torchao's weight-only tensor
subclasses: those need torchao installed to load the program (here it is a bench-only extra) and have no
form for codebooks; plain buffers + ATen ops load anywhere torch does. Other layers stay float32.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compression.coding.encoding import Encoded, grid, group_layout, numpy_parts
from mpclient.format.codecs import codebook

COMPACT_PT2_NAME = "model.compact.pt2"


def _pack4(codes: torch.Tensor) -> torch.Tensor:
    flat = (codes.reshape(-1).to(torch.int16) & 0xF).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


class _Codes(torch.nn.Module):
    """Integer codes as a buffer (4-bit ones packed), unpacked to int64 in the graph."""

    def __init__(self, codes: torch.Tensor, signed: bool):
        super().__init__()
        lo, hi = int(codes.min()), int(codes.max())
        self.numel, self.signed = codes.numel(), signed
        self.packed = (-8 <= lo and hi <= 7) if signed else hi <= 15
        data = _pack4(codes) if self.packed else codes.reshape(-1).to(torch.int8 if signed else torch.uint8)
        self.register_buffer("data", data)

    def forward(self) -> torch.Tensor:
        if not self.packed:
            return self.data.to(torch.int64)
        nibbles = torch.stack([self.data & 0xF, self.data >> 4], dim=1).reshape(-1)[:self.numel].to(torch.int64)
        return torch.where(nibbles >= 8, nibbles - 16, nibbles) if self.signed else nibbles


class CompactWeight(torch.nn.Module):
    """Rebuilds one weight: affine ((code - zero) * scale; per channel or per group of a row) or codebook."""

    def __init__(self, enc: Encoded, shape: tuple[int, ...]):
        super().__init__()
        self.shape, self.kind = tuple(shape), enc.codec
        if enc.codec == "codebook":
            indices, centroids = codebook.table(enc.shape, enc.params, numpy_parts(enc))
            self.codes = _Codes(torch.from_numpy(indices), signed=False)
            self.register_buffer("table", torch.from_numpy(centroids))
            return
        on_grid = grid(enc)
        self.group = on_grid.group_size
        codes = torch.from_numpy(on_grid.codes)
        self.codes = _Codes(codes, signed=int(codes.min()) < 0)
        rows = shape[0]
        # one scale (and zero point) per group of a row, per row (axis 0), or one for the tensor
        layout = (rows, group_layout(shape, self.group)[2]) if self.group else \
            (rows, 1) if on_grid.axis == 0 else (1, 1)
        self.register_buffer("scale", torch.from_numpy(on_grid.scales).reshape(layout))
        zero = on_grid.zero_points
        self.register_buffer("zero", None if zero is None else torch.from_numpy(zero).float().reshape(layout))

    def forward(self) -> torch.Tensor:
        if self.kind == "codebook":
            return self.table[self.codes()].reshape(self.shape)
        rows = self.shape[0]
        codes = self.codes().to(torch.float32).reshape(rows, -1)
        scale, zero = self.scale, self.zero
        if self.group:
            cols = codes.shape[1]
            scale = scale.repeat_interleave(self.group, dim=1)[:, :cols]
            zero = None if zero is None else zero.repeat_interleave(self.group, dim=1)[:, :cols]
        if zero is not None:
            codes = codes - zero
        return (codes * scale).reshape(self.shape)


class CompactLinear(torch.nn.Module):
    def __init__(self, layer: torch.nn.Linear, weight: CompactWeight):
        super().__init__()
        self.weight_codes, self.bias = weight, layer.bias

    def forward(self, x):
        return F.linear(x, self.weight_codes(), self.bias)


class CompactConv2d(torch.nn.Module):
    def __init__(self, layer: torch.nn.Conv2d, weight: CompactWeight):
        super().__init__()
        self.weight_codes, self.bias = weight, layer.bias
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups

    def forward(self, x):
        return F.conv2d(x, self.weight_codes(), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _expressible(enc: Encoded | None, shape: tuple) -> bool:
    if enc is None or tuple(enc.shape) != tuple(shape):
        return False
    if enc.codec == "codebook":
        return True
    if enc.codec != "affine":   # binary (sign) weights have no compact module here yet: they stay float
        return False
    on_grid = grid(enc)
    zero = on_grid.zero_points
    return on_grid.axis in (None, 0) and (zero is None or bool(np.array_equal(zero, np.round(zero))))


def compact_module(model: torch.nn.Module, encodings: dict[str, Encoded]) -> tuple[torch.nn.Module, list[str]]:
    """A copy of `model` with every expressible Linear/Conv2d weight held as codes. -> (module, layer names)."""
    compact = copy.deepcopy(model)
    replaced = []
    for name, module in list(compact.named_modules()):
        if type(module) not in (torch.nn.Linear, torch.nn.Conv2d):
            continue
        enc = encodings.get(f"{name}.weight" if name else "weight")
        if not _expressible(enc, tuple(module.weight.shape)):
            continue
        weight = CompactWeight(enc, tuple(module.weight.shape))
        new = CompactLinear(module, weight) if isinstance(module, torch.nn.Linear) else CompactConv2d(module, weight)
        parent_name, _, child = name.rpartition(".")
        setattr(compact.get_submodule(parent_name) if parent_name else compact, child, new)
        replaced.append(name)
    return compact.eval(), replaced


def write_compact_pt2(model: torch.nn.Module, encodings: dict[str, Encoded], inputs: tuple, path: Path) -> dict:
    """-> {"written", "layers"}; nothing is written when no layer has a compact form."""
    compact, replaced = compact_module(model, encodings)
    if not replaced:
        return {"written": False, "layers": []}
    program = torch.export.export(compact, tuple(inputs))
    # the file is about the weights: no copy of the example inputs, no per-node source provenance (stack
    # traces, originating ops); nn_module_stack stays, torch.export.unflatten needs it
    program._example_inputs = None
    for node in program.graph.nodes:
        for key in ("stack_trace", "from_node", "source_fn_stack", "torch_fn"):
            node.meta.pop(key, None)
    torch.export.save(program, str(path))
    return {"written": True, "layers": replaced}
