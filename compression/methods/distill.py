"""Knowledge distillation into a smaller student derived from the uploaded model (the teacher):
fewer transformer layers or narrower CNN/MLP layers (compression.students), initialised from the
teacher's weights, then trained to match the teacher on the job's training data (unlabeled data
is enough): Hinton soft targets for classifiers, cosine / MSE for embeddings and regression, and
optional hidden-state hints for transformers. The student replaces the model.

TODO(lead): an uploaded student (a second model id) would replace `derive_student` here."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from compression.errors import CompressionError
from compression.methods.base import CompressionState, Phase
from compression.methods.finetune import teacher_step
from compression.students import derive_student
from compression.trainloop import Loss, TrainingSpec, fit, is_hf, resolve_loss
from compression.weights import TrainableWeights


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

    def describe(self) -> str:
        shape = f"{self.layers or 'half the'} layers" if self.layers or self.layer_indices else f"width {self.width or 0.5:g}"
        return f"distill into {shape}, {self.epochs} epochs ({self.loss})"


def distill(spec: DistillSpec, state: CompressionState) -> dict:
    if state.data is None or state.data.train is None or len(state.data.train) == 0:
        raise CompressionError("the distill stage needs training data (labels optional); none was given")
    if state.teacher is None:
        raise CompressionError("the distill stage needs the uploaded model as teacher")
    hf = is_hf(state)
    if spec.hint_weight and not hf:
        raise CompressionError("hint_weight applies to transformer (Hugging Face) models only")
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
    step = teacher_step(spec, state, loss, labelled, hint_map, spec.hint_weight)
    try:
        result = fit(spec, state, state.model, weights, step, "distill", lambda f: outer(0.05 + 0.95 * f))
    finally:
        weights.finish(state)
    outer(1.0)
    return {**result, "loss": loss, "student": student, "parameters_before": params_before,
            "parameters_after": sum(p.numel() for p in state.model.parameters())}
