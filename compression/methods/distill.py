"""Knowledge distillation into a smaller student derived from the uploaded model (the teacher):
fewer transformer layers or narrower CNN/MLP layers (compression.training.students), initialised from the
teacher's weights, then trained to match the teacher on the job's training data (unlabeled data
is enough): Hinton soft targets for classifiers, cosine / MSE for embeddings and regression, and
optional hidden-state hints, a per-token loss on the last hidden states and a frozen embedding
block for transformers. The student replaces the model. With `precompute_targets` the teacher runs once
over the (fixed) training data before training instead of once per step and epoch.

An uploaded student is not derived here: the job runs on the student's model id with `teacher_model_id`
naming the teacher (state.teacher), and its finetune stage learns the teacher's outputs."""
from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Literal

import torch
from pydantic import Field

from compression.data.tensor_data import TensorData
from compression.errors import CompressionError
from compression.stage import CompressionState, Phase
from compression.methods.finetune import teacher_step
from compression.training.students import derive_student
from compression.training.loop import Loss, TrainingSpec, _trim, device_for, fit, forward, is_hf, resolve_loss, \
    task_loss
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
    precompute_targets: bool = Field(False, description="run the teacher once over the training data before "
                                     "training and train on its stored outputs (the teacher's forward pass is "
                                     "then paid once, not every step of every epoch; worth it from about two "
                                     "epochs on). Hints and the token loss also store the hidden states they "
                                     "use (N x tokens x hidden each, at most 4 GiB in all); max_seconds "
                                     "counts the teacher pass")


CACHE_LIMIT = 4 << 30   # bytes of stored teacher hidden states (precompute_targets)


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


@torch.no_grad()
def _teacher_targets(spec: DistillSpec, state: CompressionState, hf: bool, layers: list[int],
                     progress) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The teacher's outputs on every training input, in order: [N, features] and, for each hidden-state
    index in `layers`, [N, tokens, hidden] (padded positions zero)."""
    train, device = state.data.train, device_for(spec)
    if layers:
        hidden_size = state.teacher.config.hidden_size
        size = len(train) * train.inputs[0].shape[1] * hidden_size * len(layers) * 4
        if size > CACHE_LIMIT:
            raise CompressionError(f"precompute_targets: the teacher's hidden states for hints / the token loss "
                                   f"would take {size / 2**30:.1f} GiB (limit {CACHE_LIMIT / 2**30:.0f} GiB); "
                                   "set hint_weight and token_weight to 0, or precompute_targets false")
    teacher = state.teacher.eval().to(device)
    outs, hidden = [], {k: [] for k in layers}
    steps = -(-len(train) // spec.batch_size)
    # Hugging Face inputs shortest first: batches of similar lengths trim most padding (exact, see _trim)
    order = torch.argsort(train.inputs[1].sum(1), stable=True) if hf else torch.arange(len(train))
    try:
        for i, batch in enumerate(train.take(order).batches(spec.batch_size, with_labels=False)):
            tokens = batch[0].shape[1] if hf else 0
            out, states = forward(teacher, tuple(t.to(device) for t in (_trim(batch) if hf else batch)), hf,
                                  hidden=bool(layers))
            outs.append(out.cpu())
            for k in layers:
                h = states[k].cpu()
                hidden[k].append(torch.nn.functional.pad(h, (0, 0, 0, tokens - h.shape[1])))
            progress((i + 1) / steps)
    finally:
        teacher.to("cpu")
    back = torch.argsort(order)
    return torch.cat(outs)[back], {k: torch.cat(v)[back] for k, v in hidden.items()}


def _cached_step(spec: DistillSpec, hf: bool, loss: Loss, labelled: bool, hint_map: dict | None, last: int,
                 targets: torch.Tensor, hidden: dict[int, torch.Tensor]):
    """batch_loss for fit() on the training data with an index column (batch = inputs..., index, [labels]):
    the losses of the live-teacher steps, with the teacher's outputs looked up by index."""
    hints = bool(hint_map) and spec.hint_weight > 0
    with_hidden = hints or spec.token_weight > 0

    def batch_loss(model, params, batch):
        labels = batch[-1] if labelled else None
        *inputs, index = batch[:-1] if labelled else batch
        index = index.cpu()
        out, states = forward(model, tuple(inputs), hf, hidden=with_hidden, params=params)
        value = task_loss(loss, spec, out, targets[index].to(out.device), labels if loss in ("ce", "kl") else None)
        if not with_hidden:
            return value
        teacher = {k: h[index, :inputs[0].shape[1]].to(out.device) for k, h in hidden.items()}
        mask = inputs[1].unsqueeze(-1).to(out.dtype)
        if hints:
            for s, t in hint_map.items():
                diff = (states[s] - teacher[t]) ** 2 * mask
                value = value + spec.hint_weight * diff.sum() / (mask.sum() * diff.shape[-1]) / len(hint_map)
        if spec.token_weight > 0:
            cos = torch.nn.functional.cosine_similarity(states[-1], teacher[last], dim=-1)
            value = value + spec.token_weight * ((1 - cos) * mask[..., 0]).sum() / mask.sum().clamp(min=1.0)
        return value
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
    data, fit_spec, start, precompute_s = state.data, spec, 0.05, None
    try:
        if spec.precompute_targets:
            began = time.monotonic()
            last = state.teacher.config.num_hidden_layers if hf else -1
            layers = sorted({*(hint_map.values() if hf and spec.hint_weight > 0 else ()),
                             *((last,) if spec.token_weight > 0 else ())})
            targets, hidden = _teacher_targets(spec, state, hf, layers, lambda f: outer(0.05 + 0.1 * f))
            step = _cached_step(spec, hf, loss, labelled, hint_map, last, targets, hidden)
            train = data.train
            state.data = dataclasses.replace(data, train=TensorData((*train.inputs, torch.arange(len(train))),
                                                                   train.labels))
            precompute_s, start = time.monotonic() - began, 0.15
            if spec.max_seconds is not None:   # the stage's time limit includes the teacher pass
                fit_spec = spec.model_copy(update={"max_seconds": max(spec.max_seconds - precompute_s, 1e-6)})
        elif spec.token_weight > 0:
            step = _token_step(spec, state, loss, hint_map, spec.hint_weight, spec.token_weight)
        else:
            step = teacher_step(spec, state, loss, labelled, hint_map, spec.hint_weight)
        result = fit(fit_spec, state, state.model, weights, step, "distill",
                     lambda f: outer(start + (1 - start) * f))
    finally:
        state.data = data
        weights.finish(state)
    outer(1.0)
    return {**result, "loss": loss, "student": student, "parameters_before": params_before,
            "parameters_after": sum(p.numel() for p in state.model.parameters()), "precompute_seconds": precompute_s}
