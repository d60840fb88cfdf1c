"""Knowledge distillation into a smaller student derived from the uploaded model (the teacher):
fewer transformer layers or narrower CNN/MLP layers (compression.training.students), initialised from the
teacher's weights, then trained to match the teacher on the job's training data (unlabeled data
is enough): Hinton soft targets for classifiers, cosine / MSE for embeddings and regression, and
optional hidden-state hints, a per-token loss on the last hidden states and a frozen embedding
block for transformers. The student replaces the model.

An uploaded student is not derived here: the job runs on the student's model id with `teacher_model_id`
naming the teacher (state.teacher), and its finetune stage learns the teacher's outputs."""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from compression.errors import CompressionError
from compression.stage import CompressionState, Phase
from compression.methods.finetune import teacher_step
from compression.training.students import derive_student
from compression.training.loop import Loss, TrainingSpec, fit, forward, is_hf, resolve_loss, task_loss
from compression.training.weights import TrainableWeights


class DistillSpec(TrainingSpec):
    """Derive a smaller student from the uploaded model and distill the uploaded model into it."""
    phase = Phase.ARCHITECTURE

    kind: Literal["distill"]
    layers: int | None = Field(None, ge=1, le=1024, description="transformers: layers the student keeps, evenly "
                               "spaced and ending at the last (default: half)")
    layer_indices: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, max_length=1024, description="transformers: exactly which teacher layers the student keeps")
    width: float | None = Field(None, gt=0, le=1, description="CNN/MLP: fraction of every hidden layer's channels/"
                                "neurons kept (parameters shrink about width^2; default 0.5); transformers: "
                                "fraction of FFN neurons kept (default 1: only layers are dropped)")
    loss: Loss = Field("auto", description="auto: cosine of sentence embeddings (Hugging Face models), kl (Hinton "
                                           "soft targets + alpha x ce) with labels, mse of outputs without")
    hint_weight: float = Field(0.0, ge=0, le=100, description="transformers: weight of the MSE between each "
                               "student layer's hidden states and its teacher layer's (intermediate hints)")
    token_weight: float = Field(0.0, ge=0, le=100, description="transformers: weight of a per-token loss, 1 - "
                                "cosine between the student's and the teacher's last hidden state at every "
                                "unmasked token (far more signal per input than the one pooled embedding)")
    freeze_embeddings: bool = Field(False, description="transformers: keep the teacher's embedding layer fixed "
                                    "(tokens missing from the training data then still match the teacher)")


def _embedding_parameters(model: torch.nn.Module) -> set[int]:
    """ids of the embedding block's parameters (BERT-like: word/position/type embeddings + their norm)."""
    emb = model.get_input_embeddings()
    for name, module in model.named_modules():
        if name and any(c is emb for c in module.children()) and \
                not any(isinstance(m, torch.nn.ModuleList) for m in module.modules()):
            return {id(p) for p in module.parameters()}
    return {id(p) for p in emb.parameters()}


def _token_step(spec: DistillSpec, state: CompressionState, loss: Loss, hint_map: dict, hint_weight: float,
                token_weight: float):
    """batch_loss for unlabelled Hugging Face distillation: the pooled-embedding loss, hidden-state
    hints and the per-token cosine of the last hidden states (one teacher forward for all three)."""
    state.teacher.eval()

    def batch_loss(model, params, batch):
        out, hidden = forward(model, batch, True, hidden=True, params=params)
        with torch.no_grad():
            target, teacher_hidden = forward(state.teacher, batch, True, hidden=True)
        value = task_loss(loss, spec, out, target, None)
        mask = batch[1].unsqueeze(-1).to(out.dtype)
        if hint_weight > 0:
            for s, t in hint_map.items():
                diff = (hidden[s] - teacher_hidden[t]) ** 2 * mask
                value = value + hint_weight * diff.sum() / (mask.sum() * diff.shape[-1]) / len(hint_map)
        cos = torch.nn.functional.cosine_similarity(hidden[-1], teacher_hidden[-1], dim=-1)
        return value + token_weight * ((1 - cos) * mask[..., 0]).sum() / mask.sum().clamp(min=1.0)
    return batch_loss


def distill(spec: DistillSpec, state: CompressionState) -> dict:
    if state.data is None or state.data.train is None or len(state.data.train) == 0:
        raise CompressionError("the distill stage needs training data (labels optional); none was given")
    if state.teacher is None:
        raise CompressionError("the distill stage needs the uploaded model as teacher")
    hf = is_hf(state)
    if (spec.hint_weight or spec.token_weight or spec.freeze_embeddings) and not hf:
        raise CompressionError("hint_weight, token_weight and freeze_embeddings apply to transformer (Hugging "
                               "Face) models only")
    if spec.token_weight and state.data.train.labels is not None:
        raise CompressionError("token_weight needs unlabelled training data (it matches the teacher's tokens)")
    params_before = sum(p.numel() for p in state.model.parameters())
    outer = state.checkpoint
    state.checkpoint = lambda f: outer(0.05 * f)
    try:
        width = spec.width if spec.width is not None else 1.0 if hf else 0.5
        student = derive_student(state, hf, spec.layers, spec.layer_indices, width)
    finally:
        state.checkpoint = outer
    hint_map = {0: 0, **{k + 1: i + 1 for k, i in enumerate(student.get("kept", []))}} if hf else None
    labelled = state.data.train.labels is not None
    loss = resolve_loss("kl" if spec.loss == "auto" and labelled and not hf else spec.loss, state, labelled,
                        default_unlabelled="mse")
    weights = TrainableWeights(state.model, state)
    if spec.freeze_embeddings:
        frozen = _embedding_parameters(state.model)
        for name, p in list(weights.params.items()):
            if id(p) in frozen and name in weights.leaves:
                del weights.leaves[name]
                p.requires_grad_(False)
    if spec.token_weight > 0:
        step = _token_step(spec, state, loss, hint_map, spec.hint_weight, spec.token_weight)
    else:
        step = teacher_step(spec, state, loss, labelled, hint_map, spec.hint_weight)
    try:
        result = fit(spec, state, state.model, weights, step, "distill", lambda f: outer(0.05 + 0.95 * f))
    finally:
        weights.finish(state)
    outer(1.0)
    return {**result, "loss": loss, "student": student, "parameters_before": params_before,
            "parameters_after": sum(p.numel() for p in state.model.parameters())}
