"""safetensors: validate the header ourselves (cheap, bounded) before the library touches data."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

from compression.formats._errors import ModelFormatError
from compression.formats.limits import MAX_SAFETENSORS_HEADER, MAX_TENSORS
from compression.formats.summary import TensorMeta

# safetensors dtype -> (bytes per element, torch dtype name)
DTYPES = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"),
    "U64": (8, "uint64"), "U32": (4, "uint32"), "U16": (2, "uint16"), "U8": (1, "uint8"),
    "BOOL": (1, "bool"), "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b"{"


def read_header(path: Path) -> list[TensorMeta]:
    """Every tensor's byte range must lie inside the file, match dtype x shape and not overlap."""
    with open(path, "rb") as f:
        return parse_header(f, Path(path).stat().st_size)


def parse_header(f: BinaryIO, size: int) -> list[TensorMeta]:
    """The same checks on a stream positioned at the start of a safetensors file of `size` bytes
    (e.g. an archive member): reads the header only, never the tensor data."""
    prefix = f.read(8)
    if len(prefix) != 8:
        raise ModelFormatError("truncated safetensors header")
    (n,) = struct.unpack("<Q", prefix)
    if n > min(MAX_SAFETENSORS_HEADER, max(size - 8, 0)):
        raise ModelFormatError(f"safetensors header length {n} is larger than the file or the limit "
                               "(truncated or not a safetensors file)")
    raw = f.read(n)
    if len(raw) != n:
        raise ModelFormatError("truncated safetensors header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelFormatError("safetensors header must be a JSON object")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise ModelFormatError(f"too many tensors ({len(header)} > {MAX_TENSORS})")
    data_len = size - 8 - n
    metas, spans = [], []
    for name, entry in header.items():
        try:
            itemsize, dtype = DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if not all(type(d) is int and d >= 0 for d in (*shape, begin, end)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"malformed safetensors entry for tensor {name!r}") from None
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * itemsize:
            raise ModelFormatError(f"tensor {name!r}: byte range does not match dtype and shape {list(shape)}")
        if end > data_len:
            raise ModelFormatError(f"tensor {name!r} claims bytes {begin}..{end} but the file holds only "
                                   f"{data_len} bytes of data (truncated or forged header)")
        spans.append((begin, end, name))
        metas.append(TensorMeta(name, shape, dtype))
    spans.sort()
    for (_, e1, a), (b2, _, b) in zip(spans, spans[1:]):
        if b2 < e1:
            raise ModelFormatError(f"tensors {a!r} and {b!r} overlap")
    return metas
