"""User data as jobs see it: tensors with the batch first, optional integer labels, and the
roles a job gives them (calibration, train, eval). Parsing uploaded files into these lives
in compression.data.datasets; methods only ever see this."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class TensorData:
    inputs: tuple[torch.Tensor, ...]        # the model's positional inputs, each [N, ...]
    labels: torch.Tensor | None = None      # [N] int64 class ids (classification), or None

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs else 0

    def take(self, index: torch.Tensor | slice) -> TensorData:
        return TensorData(tuple(t[index] for t in self.inputs), None if self.labels is None else self.labels[index])

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                with_labels: bool = True) -> Iterator[tuple]:
        """Yields (inputs..., labels) when labelled and `with_labels`, else (inputs...)."""
        n = len(self)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            part = self.take(order[i:i + batch_size])
            yield (*part.inputs, part.labels) if with_labels and part.labels is not None else part.inputs


@dataclass
class JobData:
    calibration: TensorData | None = None
    train: TensorData | None = None
    eval: TensorData | None = None

    def calibration_batches(self, batch_size: int = 32, max_samples: int = 512) -> list[tuple] | None:
        """Batches for data-driven criteria; falls back to the training data, without labels
        unless the data has them (saliency pruning uses labels when present)."""
        source = self.calibration or self.train
        if source is None:
            return None
        return list(source.take(slice(0, max_samples)).batches(batch_size))
