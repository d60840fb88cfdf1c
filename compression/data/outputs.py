"""Running models on sample inputs and comparing outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves


@torch.no_grad()
def run(model: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    """Outputs flattened to [batch, features] (or [1, features] if they are not batched)."""
    leaves = [t for t in tree_leaves(model(*inputs)) if isinstance(t, torch.Tensor)]
    if not leaves:
        raise ValueError("the model returned no tensors")
    batch = inputs[0].shape[0] if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim else None
    if batch and all(t.ndim and t.shape[0] == batch for t in leaves):
        return torch.cat([t.detach().reshape(batch, -1).double() for t in leaves], dim=1)
    return torch.cat([t.detach().reshape(-1).double() for t in leaves]).reshape(1, -1)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max()) if a.numel() else 0.0


def row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine per row; rows that are equal count 1 even when both are zero (cosine alone would say 0, and a
    model whose outputs are all zero on these inputs, e.g. a detector's empty heat map, kept them exactly).
    One output per row (a score, a probability): the cosine of one number is its sign, so the batch's
    column is compared as one vector instead."""
    if a.ndim == 2 and a.shape[1] == 1 and a.shape[0] > 1:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
    cos = F.cosine_similarity(a, b, dim=1, eps=1e-12)
    return torch.where((a == b).all(dim=1), torch.ones_like(cos), cos)


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(row_cosines(a, b).mean())


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8),
                       b.detach().contiguous().reshape(-1).view(torch.uint8))
