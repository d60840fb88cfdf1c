"""Weight sharing (Deep Compression): per-layer 1-D k-means; each weight stores the index of its
centroid. On pruned layers only the kept weights are clustered and the mask is kept."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from compression.coding import kmeans1d
from compression.coding.encoding import Encoded, Part, bitpacked, decode, dtype_name
from mpclient.format.codecs import cast, codebook
from compression.stage import CompressionState, MethodSpec, Phase, encode_weight, pattern_matches, select_targets

Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class ShareSpec(MethodSpec):
    """k-means weight sharing with 2^bits shared values per layer."""
    phase = Phase.VALUES

    kind: Literal["share"]
    bits: int = Field(ge=1, le=8, description="index width: 2^bits centroids per layer")
    layers: dict[Pattern, Annotated[int, Field(ge=1, le=8)]] = Field(
        default_factory=dict, max_length=256, description="per-layer bits overrides: glob pattern -> bits")
    init: Literal["linear", "density", "random"] = Field(
        "linear", description="centroid initialisation (linear is best for accuracy in Deep Compression)")
    centroid_dtype: Literal["float32", "float16"] = Field("float32", description="storage of the codebook")
    bias_dtype: Literal["float32", "float16"] = Field(
        "float32", description="storage of the biases of shared layers (float16 halves them; on a small "
                               "model such as LeNet-5 the biases are a sixth of the compressed bytes)")
    iterations: int = Field(100, ge=0, le=10000, description="at most this many Lloyd iterations")
    exclude: list[Pattern] = Field(default_factory=list, max_length=256,
                                   description="glob patterns of layers or tensors left unshared")
    include_embeddings: bool = Field(True, description="also share nn.Embedding weights")


    def check_against(self, layer_names: list[str]) -> list[str]:
        return [f"{field} pattern {p!r} matches no layer of the model"
                for field, pats in (("exclude", self.exclude), ("layers", list(self.layers)))
                for p in pats if not pattern_matches(p, layer_names)]

    def bits_for(self, name: str) -> int:
        return next((b for p, b in self.layers.items() if pattern_matches(p, [name])), self.bits)


def codebook_node(values: torch.Tensor, centroids: np.ndarray, indices: np.ndarray, bits: int,
                  centroid_dtype: str) -> Encoded:
    c = torch.from_numpy(np.asarray(centroids, dtype=np.float32).copy())
    c = c.to(getattr(torch, centroid_dtype))
    idx = bitpacked(torch.from_numpy(indices.astype(np.int64)), bits, "uint8")
    return codebook.encode((values.numel(),) if values.ndim == 1 else tuple(values.shape), dtype_name(values.dtype),
                           centroids=Part(c, centroid_dtype), indices=idx, bits=bits)


def share(spec: ShareSpec, state: CompressionState) -> None:
    targets = select_targets(state, spec.exclude, spec.include_embeddings, "share")
    for i, target in enumerate(targets):
        state.checkpoint(i / len(targets))
        bits = spec.bits_for(target.name)
        mask = state.masks.get(target.name)
        w = target.param.detach()
        kept = w.reshape(-1)[mask.reshape(-1)] if mask is not None else w.reshape(-1)
        k = min(2 ** bits, max(kept.numel(), 1))
        fit = kmeans1d.fit(kept.float().numpy(), k, init=spec.init, seed=state.seed, iters=spec.iterations)
        centroids = fit.centroids
        if spec.centroid_dtype == "float16":
            centroids = np.sort(centroids.astype(np.float16).astype(np.float32))

        def encode(values: torch.Tensor, centroids=centroids, bits=bits) -> Encoded:
            idx = kmeans1d.assign(values.float().numpy(), centroids)
            return codebook_node(values, centroids, idx, bits, spec.centroid_dtype)

        encode_weight(state, target, encode, bits)
        if spec.bias_dtype == "float16":
            _cast_bias(state, target.module_name)
    state.checkpoint(1.0)


def _cast_bias(state: CompressionState, module: str) -> None:
    bias = dict(state.model.named_parameters()).get(f"{module}.bias")
    name = f"{module}.bias"
    if bias is None or name in state.encodings or bias.dtype != torch.float32:
        return
    enc = cast.encode(tuple(bias.shape), "float32", Part(bias.detach().half().reshape(-1), "float16"))
    with torch.no_grad():
        bias.copy_(decode(enc))   # the model holds exactly what the container decodes
    state.encodings[name] = enc
