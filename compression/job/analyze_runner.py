"""Analyze jobs: per-layer sensitivity alone, before choosing a recipe (#16 item 3). Each weight layer is
stored alone at int8 / int4 / int3 (groups of 64) and the change of the metric measured on the user's
data; the job writes no compressed model, only the table (`metrics.sensitivity`, report.json) and the
layers that break first."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from compression.errors import CompressionError
from compression.formats import load_model
from compression.formats.options import loader_options
from compression.job.runner import load_job_datasets
from compression.job.sources import DatasetFile
from compression.job.stages import ArtifactFile, JobHooks, JobOutput
from compression.search.sensitivity import WIDTHS, layer_sensitivity


class AnalyzeSpec(BaseModel):
    """`POST /v1/jobs` {"analyze": {...}} instead of a recipe, pipeline or goal."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["cosine", "agreement", "top1", "top5", "mse"] | None = Field(
        None, description="what a layer's treatment costs (default: top1 with labels, agreement for "
                          "classifiers, else cosine)")
    samples: int = Field(256, ge=8, le=4096, description="samples of the data measured (the first ones)")
    budget_minutes: float = Field(15, gt=0, le=240, description="layers not reached in time are left out "
                                                                "(complete: false)")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def run_analyze_job(model_path: Path, model_format: str, model_options, spec: AnalyzeSpec, out_dir: Path,
                    hooks: JobHooks = JobHooks(), dataset_files: dict[str, tuple[Path, str]] | None = None, *,
                    sample_inputs: DatasetFile | None = None) -> JobOutput:
    if model_format == "onnx":
        raise CompressionError("analyze jobs take torch formats for now")
    if not dataset_files:
        raise CompressionError("an analyze job measures layers on data: give data.calibration or data.eval")
    hooks.on_progress("load", 0.0)
    loaded = load_model(Path(model_path), model_format, loader_options(model_options), seed=spec.seed,
                        sample_inputs=sample_inputs)
    data = load_job_datasets(dataset_files, loaded)
    role = "eval" if data.eval is not None else "calibration"
    subset = getattr(data, role).take(slice(0, spec.samples))
    metric = spec.metric or ("top1" if subset.labels is not None else "agreement" if loaded.probe is None
                             else "cosine")
    if metric in ("top1", "top5") and subset.labels is None:
        raise CompressionError(f"metric {metric} needs labels; the {role} dataset has none (use cosine or agreement)")
    hooks.on_progress("per-layer sensitivity", 0.1)
    start = time.monotonic()
    sensitivity = layer_sensitivity(loaded.model, loaded.probe, subset, metric,
                                    deadline=start + spec.budget_minutes * 60)
    if not sensitivity["layers"]:
        raise CompressionError("the model has no weight layers to measure (Linear, Conv, Embedding, ...)")
    worst = sorted(sensitivity["layers"], key=lambda row: -row["loss"][WIDTHS[-2]])[:5]
    metrics = {
        "analyze": {"spec": spec.model_dump(mode="json", exclude_none=True), "data": role,
                    "samples": len(subset), "metric": metric, "seconds": round(time.monotonic() - start, 1),
                    "most_sensitive_at_int4": [{"tensor": r["tensor"], "loss": r["loss"][WIDTHS[-2]]} for r in worst],
                    "summary": _sentence(sensitivity, worst, metric, role, len(subset))},
        "sensitivity": sensitivity,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.json"
    report.write_text(json.dumps({"analyze": metrics["analyze"], "metrics": metrics}, indent=1, sort_keys=True))
    hooks.on_progress(None, 1.0)
    return JobOutput([ArtifactFile(report.name, "report", report)], metrics)


def _sentence(sensitivity: dict, worst: list[dict], metric: str, role: str, samples: int) -> str:
    layers = sensitivity["layers"]
    fine = sum(1 for r in layers if r["loss"][WIDTHS[-2]] <= 0.005)
    head = (f"{len(layers)} layers measured on {samples} samples of the {role} data ({metric}); "
            f"{fine} lose at most 0.005 at int4")
    if not sensitivity["complete"]:
        head += " (time ran out: some layers were not measured)"
    return head + (f"; the most sensitive at int4: {worst[0]['tensor']} ({worst[0]['loss'][WIDTHS[-2]]:.4f})"
                   if worst else "")
