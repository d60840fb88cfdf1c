"""What both job runners (torch and ONNX) share: phases and progress, the stage loop with its evaluation
and training records, and the artifact and output types."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compression.data.evaluation import evaluate
from compression.errors import JobCancelled
from compression.pipeline import PipelineSpec
from compression.registry import run_stage
from compression.stage import CompressionState
from compression.training.checkpoints import CheckpointFolder

# overall progress at the start of each phase
LOAD, STAGES, EXPORT, VERIFY, DONE = 0.0, 0.05, 0.7, 0.85, 1.0
CONTAINER_NAME = "model.mpz"
HF_FOLDER_NAME = "model-hf.zip"
ONNX_NAME = "model.onnx"
COMPACT_ONNX_NAME = "model.compact.onnx"


# What a user can do with each artifact kind: (runnable outside modelpress, runtime, how to load it)
ARTIFACT_KINDS: dict[str, tuple[bool, str | None, str | None]] = {
    "container": (False, "modelpress", "mpclient.load_state_dict(path)  # numpy arrays; pip install ./mpclient"),
    "safetensors": (False, None, "safetensors.torch.load_file(path)  # dense weights; your own model class"),
    "onnx": (True, "onnxruntime", "onnxruntime.InferenceSession(path)  # dense float32"),
    "onnx-compact": (True, "onnxruntime", "onnxruntime.InferenceSession(path)  # compressed weights, "
                                          "DequantizeLinear/Gather in the graph"),
    "onnx-int8": (True, "onnxruntime", "onnxruntime.InferenceSession(path)  # int8 kernels"),
    "torch-export": (True, "torch", "torch.export.load(path).module()"),
    "torch-export-compact": (True, "torch", "torch.export.load(path).module()  # int codes, dequantized in the graph"),
    "torchscript": (True, "torch", "torch.jit.load(path)"),
    "torchscript-int8": (True, "torch", "torch.jit.load(path)  # torch's dynamic int8 kernels"),
    "hf-folder": (True, "transformers", "unzip, then transformers.AutoModel.from_pretrained(folder)"),
    "hf-compressed-tensors": (True, "transformers + compressed-tensors",
                              "pip install compressed-tensors; unzip, then transformers.AutoModel.from_pretrained(folder)"),
    "report": (False, None, None),
}


@dataclass
class JobHooks:
    on_progress: Callable[[str | None, float], None] = lambda stage, fraction: None
    is_cancelled: Callable[[], bool] = lambda: False
    on_log: Callable[[dict], None] = lambda record: None   # training stages: one record per epoch


@dataclass
class ArtifactFile:
    name: str
    kind: str     # "container" | "safetensors" | "torchscript" | "torch-export" | "hf-folder" | "onnx" | "onnx-compact"
    #               | "onnx-int8"
    #               | "torchscript-int8" | "report"
    path: Path


@dataclass
class JobOutput:
    artifacts: list[ArtifactFile]
    metrics: dict


@dataclass
class Run:
    hooks: JobHooks
    timings: dict[str, float] = field(default_factory=dict)
    stage_reports: list[dict] = field(default_factory=list)
    evaluation: list[dict] = field(default_factory=list)   # eval-data metrics before and after each stage
    training_log: list[dict] = field(default_factory=list)  # per-epoch records of training stages

    def at(self, phase: str | None, fraction: float) -> None:
        if self.hooks.is_cancelled():
            raise JobCancelled()
        self.hooks.on_progress(phase, fraction)

    def timed(self, name: str, start: float) -> None:
        self.timings[name] = round(time.perf_counter() - start, 4)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _log(progress: Run, index: int, record: dict) -> None:
    record = {"stage_index": index, **record}
    if len(progress.training_log) < 10_000:
        progress.training_log.append(record)
    progress.hooks.on_log(record)


def compress(spec: PipelineSpec, state: CompressionState, progress: Run,
              checkpoints: CheckpointFolder | None) -> CompressionState:
    width = (EXPORT - STAGES) / len(spec.stages)
    _evaluate(state, progress, None, None)
    for i, stage in enumerate(spec.stages):
        base = STAGES + width * i
        progress.at(stage.kind, base)
        state.checkpoint = lambda fraction, kind=stage.kind, base=base: progress.at(
            kind, base + width * min(max(fraction, 0.0), 1.0))
        state.log = lambda record, i=i: _log(progress, i, record)
        if checkpoints is not None:   # scoped per stage: two finetune stages never share a file
            state.save_checkpoint = lambda name, payload, i=i: checkpoints.save(f"stage-{i}-{name}", payload)
            state.load_checkpoint = lambda name, i=i: checkpoints.load(f"stage-{i}-{name}")
        start = time.perf_counter()
        with torch.enable_grad() if stage.trains else torch.no_grad():
            result = run_stage(stage, state)
        progress.timed(f"stage {i} {stage.kind}", start)
        progress.stage_reports.append({"stage": i, "kind": stage.kind, **jsonable_report(result)})
        _evaluate(state, progress, i, stage.kind)
    return state


def _evaluate(state: CompressionState, progress: Run, index: int | None, kind: str | None) -> None:
    if state.data is None or state.data.eval is None:
        return
    start = time.perf_counter()
    metrics = evaluate(state.model, state.teacher, state.data.eval, state.probe)
    progress.evaluation.append({"after_stage": index, "kind": kind, **metrics})
    progress.timed("evaluation" if index is None else f"evaluation {index}", start)


def jsonable_report(result) -> dict:
    """What a stage returned (a dataclass, a list of them, or a dict), for the job's metrics; capped in size."""
    if dataclasses.is_dataclass(result):
        return {"result": dataclasses.asdict(result)}
    if isinstance(result, list) and result and all(dataclasses.is_dataclass(r) for r in result):
        return {"result": [dataclasses.asdict(r) for r in result[:500]]}
    if isinstance(result, dict):   # training stages: epochs, steps, loss, best score, student shape
        text = json.dumps(result, default=str)
        return {"result": json.loads(text)} if len(text) <= 100_000 else {}
    return {}


def stored_tensors(state: CompressionState) -> tuple[dict, dict]:
    """(weights, encodings) of the compressed model as the container stores them: every state_dict entry,
    raw where no stage encoded it."""
    from compression.coding.encoding import raw

    weights = {k: v.detach() for k, v in state.model.state_dict().items()}
    return weights, {k: state.encodings.get(k) or raw(v) for k, v in weights.items()}
