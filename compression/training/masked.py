"""Retraining helpers for Deep Compression: masked fine-tuning after pruning and centroid
fine-tuning after weight sharing (Han et al. 2016, section 3.1). Plain supervised
classification data (`X`, integer labels `y`); the service wires datasets in later.

Centroid fine-tuning: the weights of a shared layer are W = C[idx] (zero where pruned); the
gradient reaching centroid c_k is the sum of dL/dW over the weights of cluster k, exactly the
Deep Compression update, computed by autograd through the gather.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

from compression.coding.encoding import Encoded, Part, decode


def batches(X: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
    order = torch.randperm(len(X), generator=generator)
    for i in range(0, len(X), batch_size):
        j = order[i:i + batch_size]
        yield X[j], y[j]


@torch.no_grad()
def accuracy(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(X), batch_size))
    return correct / max(len(X), 1)


def train(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 1e-3,
          batch_size: int = 64, seed: int = 0, masks: dict[str, torch.Tensor] | None = None,
          weight_decay: float = 0.0) -> torch.nn.Module:
    """Adam training; with `masks` (state_dict name -> bool keep-mask), pruned weights get no
    gradient and are reset to zero after every step, so the sparsity pattern is kept."""
    masks = masks or {}
    params = dict(model.named_parameters())
    keep = {params[n]: m.to(params[n].dtype) for n, m in masks.items() if n in params}
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(X, y, batch_size, gen):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            for p, m in keep.items():
                p.grad.mul_(m)
            opt.step()
            with torch.no_grad():
                for p, m in keep.items():
                    p.copy_(torch.where(m.bool(), p, torch.zeros(())))
    model.eval()
    return model


def masked_finetune(model: torch.nn.Module, masks: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor,
                    **kwargs) -> torch.nn.Module:
    """Retrain a pruned model keeping pruned weights at zero."""
    return train(model, X, y, masks=masks, **kwargs)


def _codebook(enc: Encoded) -> tuple[Encoded, torch.Tensor | None] | None:
    """(codebook node, dense keep-mask or None) of a shared weight, else None."""
    if enc.codec == "codebook":
        return enc, None
    if enc.codec == "sparse" and isinstance(enc.parts["values"], Encoded) and enc.parts["values"].codec == "codebook":
        from mpclient.format import sparse_index
        gaps = decode(enc.parts["gaps"]) if isinstance(enc.parts["gaps"], Encoded) else enc.parts["gaps"].data
        positions, filler = sparse_index.decode_gaps(gaps.to(torch.int64).numpy(), int(enc.params["bits"]))
        return enc.parts["values"], torch.from_numpy(positions[~filler].copy())
    return None


def _with_centroids(enc: Encoded, centroids: torch.Tensor) -> Encoded:
    def swap(node: Encoded) -> Encoded:
        if node.codec == "codebook":
            storage = node.parts["centroids"].storage
            return Encoded(node.codec, node.shape, node.dtype, node.params,
                           {**node.parts, "centroids": Part(centroids.detach().to(getattr(torch, storage)).clone(), storage)})
        return Encoded(node.codec, node.shape, node.dtype, node.params,
                       {k: swap(p) if isinstance(p, Encoded) else p for k, p in node.parts.items()})
    return swap(enc)


def finetune_centroids(model: torch.nn.Module, encodings: dict[str, Encoded], X: torch.Tensor, y: torch.Tensor, *,
                       epochs: int, lr: float = 1e-4, batch_size: int = 64, seed: int = 0,
                       train_raw: bool = True) -> dict[str, Encoded]:
    """Fine-tune the shared centroids of every codebook-encoded weight (indices and masks fixed);
    with `train_raw`, parameters no stage encoded (biases) train too. Returns the updated
    encodings and sets the model's weights to their decoded values."""
    params = dict(model.named_parameters())
    shared = {}
    for name, enc in encodings.items():
        found = _codebook(enc) if name in params else None
        if found is None:
            continue
        book, positions = found
        idx = book.parts["indices"]
        idx = (decode(idx) if isinstance(idx, Encoded) else idx.data).reshape(-1).to(torch.int64)
        centroids = book.parts["centroids"].data.to(torch.float32).clone().requires_grad_(True)
        if positions is not None:   # entries include fillers: keep the real ones, in order
            idx = idx[_real_entries(enc)]
        shared[name] = (centroids, idx, positions)
    trainable = [c for c, _, _ in shared.values()]
    flags = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():   # only what is trained gets gradients
        p.requires_grad_(train_raw and n not in encodings)
    if train_raw:
        trainable += [p for n, p in params.items() if n not in encodings]
    opt = torch.optim.Adam(trainable, lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def weights() -> dict[str, torch.Tensor]:
        out = {}
        for name, (c, idx, positions) in shared.items():
            shape = params[name].shape
            values = c[idx]
            if positions is None:
                out[name] = values.reshape(shape)
            else:
                flat = torch.zeros(params[name].numel(), dtype=values.dtype).index_put((positions,), values)
                out[name] = flat.reshape(shape)
        return out

    model.train()
    for _ in range(epochs):
        for xb, yb in batches(X, y, batch_size, gen):
            opt.zero_grad(set_to_none=True)
            state = {**{n: p for n, p in params.items() if n not in shared}, **weights()}
            F.cross_entropy(functional_call(model, state, (xb,)), yb).backward()
            opt.step()
    model.eval()
    for n, p in params.items():
        p.requires_grad_(flags[n])
    new = dict(encodings)
    with torch.no_grad():
        for name, (c, _, _) in shared.items():
            new[name] = _with_centroids(encodings[name], c)
            params[name].copy_(decode(new[name]))
    return new


def _real_entries(enc: Encoded) -> torch.Tensor:
    from mpclient.format import sparse_index
    gaps = decode(enc.parts["gaps"]) if isinstance(enc.parts["gaps"], Encoded) else enc.parts["gaps"].data
    _, filler = sparse_index.decode_gaps(gaps.to(torch.int64).numpy(), int(enc.params["bits"]))
    return torch.from_numpy(~filler)
