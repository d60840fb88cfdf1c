"""Fine-tuning stage: recovery training after any compression stage, keeping what the earlier
stages fixed (pruning masks, shared-weight indices, quantizer settings; see compression.training.weights).
Labelled training data trains with cross-entropy; without labels the model learns to match the
uploaded model's outputs (distillation from the teacher), so unlabeled data is enough."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from compression.errors import CompressionError
from compression.stage import CompressionState, Phase
from compression.training.loop import Loss, TrainingSpec, fit, forward, is_hf, resolve_loss, task_loss
from compression.training.weights import TrainableWeights


class FinetuneSpec(TrainingSpec):
    """Recovery training on the job's training data (masks, codebooks and quantizers are kept)."""
    phase = Phase.TRAINING

    kind: Literal["finetune"]
    loss: Loss = Field("auto", description="auto: ce with labels, else match the teacher (cosine of sentence "
                                           "embeddings for Hugging Face models, mse of outputs otherwise); "
                                           "kl: Hinton soft targets of the teacher (+ alpha x ce with labels)")


def _split(batch: tuple, labelled: bool) -> tuple[tuple, torch.Tensor | None]:
    return (batch[:-1], batch[-1]) if labelled else (batch, None)


def teacher_step(spec: TrainingSpec, state: CompressionState, loss: Loss, labelled: bool, hint_map=None,
                 hint_weight: float = 0.0):
    """batch_loss(model, params, batch) for fit(): the task loss against labels and/or the teacher,
    plus hidden-state hints (student hidden k <- teacher hidden hint_map[k], Hugging Face models)."""
    hf = is_hf(state)
    if loss != "ce" and state.teacher is None:
        raise CompressionError(f"the {loss} loss needs the uploaded model as teacher")
    if state.teacher is not None:
        state.teacher.eval()
    hints = bool(hint_map) and hint_weight > 0

    def batch_loss(model, params, batch):
        inputs, labels = _split(batch, labelled)
        out, hidden = forward(model, inputs, hf, hidden=hints, params=params)
        target = teacher_hidden = None
        if loss != "ce" or hints:
            with torch.no_grad():
                target, teacher_hidden = forward(state.teacher, inputs, hf, hidden=hints)
        value = task_loss(loss, spec, out, target, labels if loss in ("ce", "kl") else None)
        if hints:
            mask = inputs[1].unsqueeze(-1).to(out.dtype)
            for s, t in hint_map.items():
                diff = (hidden[s] - teacher_hidden[t]) ** 2 * mask
                value = value + hint_weight * diff.sum() / (mask.sum() * diff.shape[-1]) / len(hint_map)
        return value
    return batch_loss


def finetune(spec: FinetuneSpec, state: CompressionState) -> dict:
    if state.data is None or state.data.train is None or len(state.data.train) == 0:
        raise CompressionError("the finetune stage needs training data; none was given")
    labelled = state.data.train.labels is not None
    loss = resolve_loss(spec.loss, state, labelled, default_unlabelled="mse")
    weights = TrainableWeights(state.model, state)
    if not weights.leaves:
        raise CompressionError("finetune: no trainable weights (all encodings are entropy-coded)")
    try:
        result = fit(spec, state, state.model, weights, teacher_step(spec, state, loss, labelled), "finetune")
    finally:
        weights.finish(state)
    state.checkpoint(1.0)
    return {**result, "loss": loss, "frozen": weights.frozen}
