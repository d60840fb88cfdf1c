"""Typed results of the modelpress API (plain dataclasses; unknown fields are kept in `raw`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

FINISHED = frozenset({"succeeded", "failed", "cancelled"})

T = TypeVar("T")


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _build(cls: type[T], data: dict) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in data.items() if k in names and k != "raw"}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name.endswith("_at") and f.name in kwargs:
            kwargs[f.name] = _dt(kwargs[f.name])
    return cls(**kwargs, raw=dict(data))  # type: ignore[call-arg]


@dataclass
class ModelInfo:
    id: str
    filename: str
    format: str
    size_bytes: int
    sha256: str
    options: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    inspection_status: str | None = None   # pending | done | failed (loaded once in a worker after upload)
    inspection_error: str | None = None
    created_at: datetime | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        return _build(cls, data)


@dataclass
class DatasetInfo:
    id: str
    filename: str
    format: str
    size_bytes: int
    sha256: str
    summary: dict = field(default_factory=dict)
    created_at: datetime | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetInfo":
        return _build(cls, data)


@dataclass
class Job:
    id: str
    model_id: str
    status: str
    recipe: str | None = None
    pipeline: dict = field(default_factory=dict)
    queue: str = ""
    data: dict | None = None
    teacher_model_id: str | None = None
    stage: str | None = None
    progress: float = 0.0
    progress_detail: dict | None = None
    error: str | None = None
    quality: dict | None = None   # the quality verdict of a finished job (see quality_passed)
    callback: dict | None = None   # the webhook: {url, status, deliveries: [{attempt, status_code, error, ...}]}
    attempts: int = 0
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Job":
        return _build(cls, data)

    @property
    def quality_passed(self) -> bool | None:
        """False when the job ran but the compressed model did not keep the upload's quality; None before
        a verdict exists (running, failed, or a server without verdicts)."""
        return None if not self.quality else bool(self.quality.get("passed"))

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass
class Artifact:
    id: str
    job_id: str
    name: str
    kind: str
    size_bytes: int
    sha256: str
    created_at: datetime | None = None
    download_url: str = ""
    runnable: bool = False          # loads without modelpress installed
    runtime: str | None = None      # what runs it (onnxruntime, torch, transformers)
    load: str | None = None         # a one-line load snippet
    ratio: float | None = None      # the upload's weight bytes / this file's bytes
    output_max_abs_diff: float | None = None
    output_mean_cosine: float | None = None   # this file's outputs vs the upload's, where measured for it
    latency_ms: float | None = None           # this file at the job's example batch (latency_batch)
    latency_batch: int | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Artifact":
        return _build(cls, data)


@dataclass
class Metrics:
    job_id: str
    status: str
    metrics: dict | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Metrics":
        return _build(cls, data)


@dataclass
class Recipe:
    name: str
    description: str
    stages: list = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        return _build(cls, data)


@dataclass
class JobPage:
    items: list[Job]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


def as_dict(obj: Any) -> Any:
    """JSON-ready form of a result (the server's own fields, unchanged)."""
    if isinstance(obj, list):
        return [as_dict(o) for o in obj]
    if isinstance(obj, JobPage):
        return {"items": as_dict(obj.items), "total": obj.total, "limit": obj.limit, "offset": obj.offset,
                "next_offset": obj.next_offset}
    if dataclasses.is_dataclass(obj) and hasattr(obj, "raw"):
        return dict(obj.raw)
    return obj
