"""`codebook`: weight sharing, value = centroids[indices]. Params: bits (index width). Parts: centroids
(float32 or float16), indices (usually a `bitpacked` node of `bits` bits each)."""
from __future__ import annotations

import numpy as np

from mpclient.format.codecs._shared import coded_suffix
from mpclient.format.nodes import Encoded, Part
from mpclient.format.storage import as_dtype

NAME = "codebook"


def encode(shape: tuple[int, ...], dtype: str, *, centroids: Part, indices: Part | Encoded, bits: int) -> Encoded:
    return Encoded(NAME, tuple(shape), dtype, {"bits": int(bits)}, {"centroids": centroids, "indices": indices})


def table(shape, params, parts) -> tuple[np.ndarray, np.ndarray]:
    """(indices as int64 in the tensor's shape, centroids as flat float32): value = centroids[indices]."""
    centroids = parts["centroids"].astype(np.float32).reshape(-1)
    indices = parts["indices"].reshape(-1).astype(np.int64)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= centroids.size):
        raise ValueError("codebook index out of range")
    return indices.reshape(shape), centroids


def decode(shape, dtype, params, parts):
    indices, centroids = table(shape, params, parts)
    return as_dtype(centroids[indices], dtype)


def describe(node: Encoded) -> str:
    return f"codebook {node.params.get('bits')}-bit {node.parts['centroids'].storage}{coded_suffix(node)}"


def details(node: Encoded) -> dict:
    return {"codebook_size": node.parts["centroids"].numel}
