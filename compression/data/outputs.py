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


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=1, eps=1e-12).mean())


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8),
                       b.detach().contiguous().reshape(-1).view(torch.uint8))
