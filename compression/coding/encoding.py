"""The service's side of the encoding nodes: torch tensors in and out.

A node's layout and its decoder live with its codec (`mpclient.format.codecs.<codec>`, torch-free, the
reader users install); this module only moves torch tensors across that boundary.

Invariant: `decode(node)` is the only way tensors are rebuilt, both for the in-memory model after a stage
and when reading a container, so the two are bitwise identical. It runs the reader's numpy decoders, so a
user's reader agrees bit for bit too.
"""
from __future__ import annotations

import numpy as np
import torch

from mpclient.format import codecs
from mpclient.format.codecs import bitpacked as bitpacked_codec
from mpclient.format.codecs import raw as raw_codec
from mpclient.format.codecs.affine import Grid, group_layout
from mpclient.format.nodes import Encoded, Part, node_storage, walk
from mpclient.format.storage import PACKED, stored_nbytes

__all__ = ["Encoded", "Grid", "PACKED", "Part", "STORAGE_DTYPES", "bitpacked", "decode", "dtype_name", "grid",
           "group_layout", "node_storage", "numpy_parts", "part_to_bytes", "raw", "stored_nbytes", "walk"]

# storage name -> torch dtype of the logical values; int4/uint4 are packed two per byte
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool, "int4": torch.int8, "uint4": torch.uint8,
}


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


def numpy_parts(enc: Encoded, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The node's parts (or those `names`) as the numpy codecs take them: flat arrays, nested nodes decoded."""
    return {k: _numpy(decode(p)) if isinstance(p, Encoded) else _numpy(p.data) for k, p in enc.parts.items()
            if names is None or k in names}


def grid(enc: Encoded) -> Grid | None:
    """The node as integer codes on a grid (affine, sign), or None for codecs without one."""
    module = codecs.CODECS.get(enc.codec)
    return module.grid(enc.shape, enc.params, numpy_parts(enc)) if hasattr(module, "grid") else None


def decode(enc: Encoded) -> torch.Tensor:
    values = codecs.decode_node(enc.codec, enc.shape, enc.dtype, enc.params, numpy_parts(enc))
    # bfloat16 comes back as float32 holding bfloat16 values: the cast below is exact
    return torch.from_numpy(np.array(values, copy=True)).to(STORAGE_DTYPES[enc.dtype])


def raw(tensor: torch.Tensor) -> Encoded:
    """The identity encoding for tensors no stage touched."""
    t = tensor.detach().cpu()
    return raw_codec.encode(tuple(t.shape), dtype_name(t.dtype), Part(t.reshape(-1), dtype_name(t.dtype)))


def bitpacked(values, width: int, dtype: str, offset: int = 0) -> Encoded | Part:
    """Integers `values + offset` (in [0, 2^width)) packed `width` bits each; a plain part when width is 8."""
    v = (values.reshape(-1).to(torch.int64).numpy() if isinstance(values, torch.Tensor)
         else np.asarray(values).reshape(-1).astype(np.int64))
    if width == 8 and offset == 0 and dtype == "uint8":
        return Part(torch.from_numpy(v.astype(np.uint8)), "uint8")
    data = torch.from_numpy(bitpacked_codec.pack(v, width, offset))
    return bitpacked_codec.encode(v.size, dtype, data=Part(data, "uint8"), width=width, offset=offset)
