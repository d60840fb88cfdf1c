"""What training may change in a compressed model, and how it is written back so the container
still holds what it claims:

- pruned weights (state.masks): trained with masked gradients, zeros re-applied every step;
- k-means shared weights (codebook): only the centroids train (Deep Compression), indices fixed;
- quantized weights (cast / affine int / fixed16 / ternary / sign): quantization-aware training,
  a float latent weight with a straight-through estimator through the quantizer, re-encoded at
  the end with the quantizer settings read back from the existing encoding;
- everything else no stage encoded (biases, norms, low-rank factors, dense layers): plain training.
Encodings this module cannot rebuild (e.g. Huffman-coded nodes) stay frozen.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from compression.coding.encoding import Encoded, Part, decode, numpy_parts
from compression.stage import CompressionState, sparse_node
from mpclient.format.codecs import codebook, sparse

Reencode = Callable[[torch.Tensor], Encoded]


def _codebook(enc: Encoded) -> tuple[Encoded, torch.Tensor | None] | None:
    """(codebook node, dense keep-mask or None) of a shared weight, else None."""
    if enc.codec == "codebook":
        return enc, None
    if enc.codec == "sparse" and isinstance(enc.parts["values"], Encoded) and enc.parts["values"].codec == "codebook":
        positions, filler = sparse.entries(enc.params, numpy_parts(enc, ("gaps",)))
        return enc.parts["values"], torch.from_numpy(positions[~filler].copy())
    return None


def _with_centroids(enc: Encoded, centroids: torch.Tensor) -> Encoded:
    def swap(node: Encoded) -> Encoded:
        if node.codec == "codebook":
            storage = node.parts["centroids"].storage
            return codebook.encode(node.shape, node.dtype, indices=node.parts["indices"], bits=node.params["bits"],
                                   centroids=Part(centroids.detach().to(getattr(torch, storage)).clone(), storage))
        return replace(node, parts={k: swap(p) if isinstance(p, Encoded) else p for k, p in node.parts.items()})
    return swap(enc)


def _real_entries(enc: Encoded) -> torch.Tensor:
    _, filler = sparse.entries(enc.params, numpy_parts(enc, ("gaps",)))
    return torch.from_numpy(~filler)


def _values_encoder(node: Encoded) -> Reencode | None:
    """The quantizer that produced `node`, rebuilt from its codec and params (same settings)."""
    from compression.methods import quantization as q
    p, out = node.params, node.dtype
    if node.codec == "cast":
        storage = node.parts["values"].storage
        spec = q.QuantizeSpec(kind="quantize", dtype={"float16": "fp16", "bfloat16": "bf16"}[storage])
        return lambda w: q._cast(w, spec, out)
    if node.codec == "sign":
        return lambda w: q._binary(w, q.QuantizeSpec(kind="quantize", dtype="binary"), out)
    if node.codec != "affine":
        return None
    if p.get("ternary"):
        return lambda w: q._ternary(w, q.QuantizeSpec(kind="quantize", dtype="ternary"), out)
    if "frac_bits" in p:
        spec = q.QuantizeSpec(kind="quantize", dtype="fixed16", frac_bits=int(p["frac_bits"]))
        return lambda w: q._fixed16(w, spec, out)
    bits = int(p.get("bits", 0))
    if bits not in (8, 4, 3):
        return None
    per_tensor = p.get("axis") is None and len(node.shape) > 1
    spec = q.QuantizeSpec(kind="quantize", dtype=f"int{bits}", symmetric=bool(p.get("symmetric", True)),
                          granularity="per_tensor" if per_tensor else None, group_size=p.get("group_size"),
                          scale_dtype=node.parts["scales"].storage)
    return lambda w: q._affine(w, spec, out)


def _has_huffman(node: Encoded) -> bool:
    return node.codec == "huffman" or any(isinstance(v, Encoded) and _has_huffman(v) for v in node.parts.values())


def reencoder(enc: Encoded, mask: torch.Tensor | None) -> tuple[Reencode, bool] | None:
    """(w -> encoding with the same codec and settings, whether values are quantized) or None."""
    if _has_huffman(enc):   # entropy coding comes last: re-coding here would silently drop it
        return None
    if enc.codec == "sparse":
        values, bits = enc.parts["values"], int(enc.params["bits"])
        if mask is None:
            return None
        if isinstance(values, Part):
            storage = values.storage
            return (lambda w: sparse_node(w, mask, lambda e: Part(e.to(w.dtype), storage), 0, index_bits=bits)), False
        inner = _values_encoder(values)
        return None if inner is None else ((lambda w: sparse_node(w, mask, inner, 0, index_bits=bits)), True)
    inner = _values_encoder(enc)
    return None if inner is None else (inner, True)


class TrainableWeights:
    """Leaves the optimizer trains (`leaves`) and the weights the forward pass uses (`current()`)."""

    def __init__(self, model: nn.Module, state: CompressionState | None = None):
        state = state or CompressionState(model)
        self.params = dict(model.named_parameters())
        self.leaves: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.quant: dict[str, tuple[Reencode, bool]] = {}
        self.shared: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self.frozen: list[str] = []
        self._flags = {n: p.requires_grad for n, p in self.params.items()}
        for name, p in self.params.items():
            enc, mask = state.encodings.get(name), state.masks.get(name)
            book = _codebook(enc) if enc is not None else None
            if book is not None:
                node, positions = book
                idx = node.parts["indices"]
                idx = (decode(idx) if isinstance(idx, Encoded) else idx.data).reshape(-1).to(torch.int64)
                if positions is not None:
                    idx = idx[_real_entries(enc)]
                centroids = node.parts["centroids"].data.float().clone().requires_grad_(True)
                self.shared[name] = (centroids, idx, positions)
                self.leaves[f"centroids:{name}"] = centroids
                p.requires_grad_(False)
                continue
            if enc is not None:
                found = reencoder(enc, mask)
                if found is None:
                    self.frozen.append(name)
                    p.requires_grad_(False)
                    continue
                self.quant[name] = found
            if mask is not None:
                self.masks[name] = mask.reshape(p.shape)
            p.requires_grad_(True)
            self.leaves[name] = p

    def to(self, device) -> None:
        for name, (c, idx, pos) in list(self.shared.items()):
            moved = c.detach().to(device).requires_grad_(True)
            self.shared[name] = (moved, idx.to(device), None if pos is None else pos.to(device))
            self.leaves[f"centroids:{name}"] = moved
        self.masks = {n: m.to(device) for n, m in self.masks.items()}

    def current(self) -> dict[str, torch.Tensor]:
        """Overrides for functional_call: centroid gathers and straight-through quantized weights."""
        out = {}
        for name, (c, idx, positions) in self.shared.items():
            shape, values = self.params[name].shape, c[idx].to(self.params[name].dtype)
            if positions is None:
                out[name] = values.reshape(shape)
            else:
                flat = torch.zeros(self.params[name].numel(), dtype=values.dtype, device=values.device)
                out[name] = flat.index_put((positions,), values).reshape(shape)
        for name, (encode, quantized) in self.quant.items():
            if quantized:   # straight-through: forward sees the quantized values, gradients reach w
                w = self.params[name]
                q = decode(encode(w.detach().cpu())).to(w.device, w.dtype)
                out[name] = w + (q - w).detach()
        return out

    def before_step(self) -> None:
        for name, m in self.masks.items():
            if self.params[name].grad is not None:
                self.params[name].grad.mul_(m)

    @torch.no_grad()
    def after_step(self) -> None:
        for name, m in self.masks.items():
            self.params[name].mul_(m)

    @torch.no_grad()
    def finish(self, state: CompressionState) -> None:
        """Writes trained values back: re-encodes quantized and sparse weights, swaps centroids."""
        for name, (encode, _) in self.quant.items():
            enc = encode(self.params[name].detach().cpu())
            self.params[name].copy_(decode(enc))
            state.encodings[name] = enc
        for name, (c, _, _) in self.shared.items():
            state.encodings[name] = _with_centroids(state.encodings[name], c.cpu())
            self.params[name].copy_(decode(state.encodings[name]))
        for name, p in self.params.items():
            p.requires_grad_(self._flags[name])
        self.after_step()

