"""Pipeline specs: an ordered list of method stages, validated as a whole."""
from __future__ import annotations

from typing import Annotated, Union

from compression.job.quality import QualitySpec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compression.stage import EXCLUSIVE_PHASES, Phase
from compression.registry import STAGE_SPECS

PROGRAM_FORMATS = ("torchscript", "torch-export")

Stage = Annotated[Union[STAGE_SPECS], Field(discriminator="kind")]  # noqa: UP007 (built from a tuple)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[Stage] = Field(min_length=1, max_length=16)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds sample inputs and any randomised method")
    quality: QualitySpec | None = Field(None, description="the bar the job's quality verdict uses (default: top1 "
                                                          "drop <= 0.01 with labelled eval data, else agreement "
                                                          ">= 0.97 for classifiers, else cosine >= 0.97)")

    @model_validator(mode="after")
    def _ordering(self):
        ordered = [(i, s) for i, s in enumerate(self.stages) if s.phase != Phase.TRAINING]
        for (i, a), (j, b) in zip(ordered, ordered[1:]):
            if b.phase < a.phase:
                raise ValueError(f"stage {j} ({b.kind}, {b.phase.name.lower()} phase) cannot come after "
                                 f"stage {i} ({a.kind}, {a.phase.name.lower()} phase)")
        for phase in EXCLUSIVE_PHASES:
            kinds = [s.kind for s in self.stages if s.phase == phase]
            if len(kinds) > 1:
                raise ValueError(f"at most one {phase.name.lower()}-phase stage per pipeline; got {', '.join(kinds)}")
        return self


def parse_pipeline(data: dict) -> PipelineSpec:
    """Raises pydantic.ValidationError naming the offending field."""
    return PipelineSpec.model_validate(data)


def check_pipeline_against_model(spec: PipelineSpec, summary: dict) -> list[str]:
    """Problems visible from a sniffed summary (e.g. exclude patterns matching no layer).
    Checked only when the summary lists every tensor; the worker re-checks against the model.
    ONNX models (summary "format": "onnx") take weight-only stages only (quantize, magnitude prune, share, huffman)."""
    problems = []
    if summary and summary.get("format") == "onnx":
        from compression.formats.onnx_file import check_stages
        problems = check_stages(spec.stages)
    if summary and summary.get("format") in PROGRAM_FORMATS:
        problems += [_program_problem(i, stage, summary["format"]) for i, stage in enumerate(spec.stages)
                     if stage.phase == Phase.ARCHITECTURE
                     and not (stage.swaps_layers and summary["format"] == "torch-export")]
    inspection = (summary or {}).get("inspection") or {}
    if inspection.get("modules_complete"):   # the model was loaded once in a worker: its real module types
        types = {m["name"]: m["type"] for m in inspection.get("modules", [])}
        problems += [f"stage {i} ({stage.kind}): {p}" for i, stage in enumerate(spec.stages)
                     for p in stage.check_module_types(types)]
    if not summary or not summary.get("layers_complete"):
        return problems
    names = [layer["name"] for layer in summary.get("layers", [])]
    return problems + [f"stage {i} ({stage.kind}): {p}" for i, stage in enumerate(spec.stages)
                       for p in stage.check_against(names)]


def _program_problem(i: int, stage, fmt: str) -> str:
    if stage.swaps_layers:   # only TorchScript gets here
        return (f"stage {i} ({stage.kind}) swaps layers, which a TorchScript program cannot have done to it; "
                "export the model with torch.export (.pt2) instead, or upload safetensors weights with a built-in "
                "architecture or a Hugging Face folder")
    return (f"stage {i} ({stage.kind}) changes tensor shapes that a {fmt} program has fixed in its graph "
            "(reshapes, batch norms); upload safetensors weights with a built-in architecture or a Hugging Face "
            "folder")


def check_pipeline_data(spec: PipelineSpec, has_calibration: bool, has_train: bool | None = None) -> list[str]:
    """Stages whose data is missing: training stages need train data; other data-driven stages
    (gptq, saliency pruning, static int8) need calibration data, for which train data stands in."""
    has_train = has_calibration if has_train is None else has_train
    problems = []
    for i, stage in enumerate(spec.stages):
        if stage.trains and not has_train:
            problems.append(f"stage {i} ({stage.kind}) needs training data (data.train); none was given")
        elif not stage.trains and stage.needs_data and not (has_calibration or has_train):
            problems.append(f"stage {i} ({stage.kind}) needs calibration data (data.calibration or data.train); "
                            "none was given")
    return problems
