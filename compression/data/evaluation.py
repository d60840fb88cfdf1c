"""Task metrics of a model on eval data, against the uploaded model (the teacher).

Classification (labels given): top-1 / top-5 accuracy, plus top-1 agreement with the teacher.
Embeddings and regression: mean cosine similarity and MSE of the outputs to the teacher's.
Without labels, agreement with the original model is what is measured. `score` is the
metric early stopping and reports lead with (top1 with labels, else cosine)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from compression.data.tensor_data import TensorData
from compression.data.outputs import mean_cosine, run

Probe = Callable[[torch.nn.Module, tuple], torch.Tensor]


def _to(batch: tuple, device) -> tuple:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)


@torch.no_grad()
def outputs(model: torch.nn.Module, data: TensorData, probe: Probe | None, *, batch_size: int = 64,
            device: torch.device | str | None = None) -> torch.Tensor:
    """[N, features] float64 outputs (the probe's, else outputs.run), on the CPU."""
    training = model.training
    model.eval()
    try:
        device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
        outs = [(probe or run)(model, _to(b, device)).cpu() for b in data.batches(batch_size, with_labels=False)]
    finally:
        model.train(training)
    return torch.cat(outs).double()


def _topk(out: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, out.shape[1])
    return float((out.topk(k, dim=1).indices == labels[:, None]).any(1).double().mean())


def compare(out: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor | None, classifier: bool) -> dict:
    """Metrics of outputs `out` against the teacher's `reference` (and labels when given)."""
    metrics = {"samples": int(out.shape[0]),
               "cosine": round(mean_cosine(out, reference), 6),
               "mse": float(F.mse_loss(out, reference))}
    if classifier and out.shape[1] > 1:
        metrics["agreement"] = round(float((out.argmax(1) == reference.argmax(1)).double().mean()), 6)
    if labels is not None:
        labels = labels.to(torch.int64)
        metrics["top1"] = round(_topk(out, labels, 1), 6)
        metrics["top5"] = round(_topk(out, labels, 5), 6)
    metrics["score"] = metrics["top1"] if labels is not None else metrics["cosine"]
    return metrics


def evaluate(model: torch.nn.Module, teacher: torch.nn.Module | None, data: TensorData, probe: Probe | None, *,
             batch_size: int = 64, reference: torch.Tensor | None = None,
             device: torch.device | str | None = None) -> dict:
    """Metrics of `model` on `data`; the teacher's outputs (or a precomputed `reference`) are the
    target for cosine/MSE/agreement. Models with a probe (embedding models) are not classifiers."""
    out = outputs(model, data, probe, batch_size=batch_size, device=device)
    if reference is None:
        reference = out if teacher is None else outputs(teacher, data, probe, batch_size=batch_size, device=device)
    return compare(out, reference, data.labels, classifier=probe is None)
