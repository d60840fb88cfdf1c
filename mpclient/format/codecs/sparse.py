"""`sparse`: a pruned tensor. `gaps` are relative indices (sparse_index.py, `bits` bits each, the top symbol a
filler), `values` one value per entry (fillers' values ignored; any part or node); every other element is zero."""
from __future__ import annotations

import math

import numpy as np

from mpclient.format import codecs, sparse_index
from mpclient.format.codecs._shared import coded_suffix, storage_of
from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "sparse"


def encode(shape: tuple[int, ...], dtype: str, *, gaps: Part | Encoded, values: Part | Encoded, bits: int) -> Encoded:
    return Encoded(NAME, tuple(shape), dtype, {"bits": int(bits)}, {"gaps": gaps, "values": values})


def entries(params, parts) -> tuple[np.ndarray, np.ndarray]:
    """(each entry's position in the flattened tensor, whether it is a filler), from the decoded `gaps`."""
    return sparse_index.decode_gaps(parts["gaps"].astype(np.int64), int(params["bits"]))


def decode(shape, dtype, params, parts):
    values = parts["values"].reshape(-1)
    if values.dtype == np.float16:
        values = values.astype(np.float32)   # widening is exact
    dense, _ = sparse_index.decode(parts["gaps"].astype(np.int64), values, math.prod(shape), int(params["bits"]))
    return as_dtype(dense, dtype).reshape(shape)


def describe(node: Encoded) -> str:
    values = node.parts["values"]
    inner = codecs.describe(values) if isinstance(values, Encoded) else storage_of(values)
    return f"sparse {node.params.get('bits')}-bit gaps{coded_suffix(node)} / {inner}"


def details(node: Encoded) -> dict:
    """Index overhead in bits per weight, and the codebook size of shared values."""
    out = {"index_bits_per_weight": round(8 * node.parts["gaps"].nbytes / max(node.numel, 1), 4)}
    values = node.parts["values"]
    if isinstance(values, Encoded):
        out.update({k: v for k, v in codecs.details(values).items() if k == "codebook_size"})
    return out
