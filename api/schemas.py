"""Request and response bodies."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from compression.job.quality import QualitySpec
from compression.job.stages import ARTIFACT_KINDS
from compression.job.analyze_runner import AnalyzeSpec
from compression.search.goal import GoalSpec
from core.documents import JobOut, UtcOut as _Out
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

__all__ = ["JobOut"]   # defined in core: webhooks send the same document


class ModelOut(_Out):
    id: str
    filename: str
    format: str
    size_bytes: int
    sha256: str
    options: dict
    summary: dict = Field(description="from the upload's headers; `inspection` once a worker has loaded the model: "
                                      "format, parameters, layers_by_type, modules (with shapes), inputs, "
                                      "output_features")
    inspection_status: Literal["pending", "done", "failed"] = Field(
        description="the worker's load of the model after upload; while pending, jobs are accepted and "
                    "checked against the model by the worker; failed: submits are refused (422)")
    inspection_error: str | None = Field(None, description="why the model could not be loaded (failed)")
    created_at: datetime


class DatasetOut(_Out):
    id: str
    filename: str
    format: str
    size_bytes: int
    sha256: str
    summary: dict
    created_at: datetime


class JobData(BaseModel):
    """Datasets a job uses, by role (ids from POST /v1/datasets)."""
    model_config = ConfigDict(extra="forbid")

    calibration: str | None = Field(None, description="for data-driven stages (gptq, saliency pruning, static int8); "
                                                      "the train data stands in when absent")
    train: str | None = Field(None, description="for finetune and distill (labels optional)")
    eval: str | None = Field(None, description="task metrics before and after every stage; early stopping")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    data: JobData | None = Field(default=None, description="datasets by role")
    teacher_model_id: str | None = Field(default=None, description="an uploaded model the training stages learn "
                                         "from (knowledge distillation into this job's model, an uploaded student); "
                                         "default: the job's own model")
    pipeline: dict | None = Field(default=None, description="{'stages': [...], 'seed': 0}; see GET /v1/methods")
    recipe: str | None = Field(default=None, description="a preset name from GET /v1/recipes")
    goal: GoalSpec | None = Field(default=None, description="instead of a recipe or pipeline: {\"target\": "
                                  "{\"ratio\": 10} | {\"max_bytes\": N}, \"constraint\": {\"metric\": \"cosine\", "
                                  "\"min\": 0.98} | {\"max_drop\": 0.01}, \"methods\"?, \"budget_minutes\"?}; needs "
                                  "data.calibration or data.eval; candidates are selected on one split and the "
                                  "result reported on data the search never saw")
    analyze: AnalyzeSpec | None = Field(default=None, description="instead of compressing: per-layer sensitivity "
                                        "only ({} for the defaults: each weight layer alone at int8/int4/int3, the "
                                        "metric's change on data.eval or data.calibration); no compressed model")
    quality: QualitySpec | None = Field(default=None, description="the bar of the job's quality verdict, e.g. "
                                        "{\"metric\": \"cosine\", \"min\": 0.99} or {\"max_drop\": 0.005}; default: "
                                        "top1 drop <= 0.01 with labelled eval data, else agreement >= 0.97 "
                                        "(classifiers) or cosine >= 0.97, on the most real inputs the job has")
    device: Literal["cpu", "gpu"] | None = Field(default=None, description="worker queue; default from settings")
    callback_url: str | None = Field(default=None, max_length=2048, description="a webhook POSTed the job document "
                                     "when the job finishes, signed with the tenant's secret (X-Modelpress-Signature); "
                                     "http(s) to a public address; default: the tenant's callback_url setting")

    @model_validator(mode="after")
    def _one_of(self) -> "JobCreate":
        if sum(x is not None for x in (self.pipeline, self.recipe, self.goal, self.analyze)) != 1:
            raise ValueError("give exactly one of 'pipeline', 'recipe', 'goal' or 'analyze'")
        if self.goal is not None and self.quality is not None:
            raise ValueError("a goal carries its own quality bar: give it as goal.constraint")
        if self.analyze is not None and self.quality is not None:
            raise ValueError("an analyze job measures, it has no quality bar")
        return self


class Page(BaseModel):
    items: list
    total: int
    limit: int
    offset: int
    next_offset: int | None


class JobPage(Page):
    items: list[JobOut]


class ModelPage(Page):
    items: list[ModelOut]


class DatasetPage(Page):
    items: list[DatasetOut]


class ArtifactOut(_Out):
    id: str
    job_id: str
    name: str
    kind: str
    size_bytes: int
    sha256: str
    created_at: datetime
    download_url: str = ""
    ratio: float | None = Field(None, description="the upload's weight bytes / this file's bytes")
    output_max_abs_diff: float | None = Field(
        None, description="this file reloaded from its bytes and run: largest output difference from the "
                          "compressed model in memory (null for files that are not run, e.g. the report)")
    latency_ms: float | None = Field(None, description="this file loaded from its bytes and run at the job's example "
                                                  "batch (latency_batch), median on the worker, timed side by side "
                                                  "with the job's other runnable files")
    latency_batch: int | None = None
    output_mean_cosine: float | None = Field(
        None, description="this file's outputs against the uploaded model's, where the job measured it for this "
                          "file (files that are not exact copies of the compressed model: int8 programs, "
                          "compressed-tensors folders)")

    @computed_field(description="loads without modelpress installed")
    @property
    def runnable(self) -> bool:
        return ARTIFACT_KINDS.get(self.kind, (False, None, None))[0]

    @computed_field(description="what runs it")
    @property
    def runtime(self) -> str | None:
        return ARTIFACT_KINDS.get(self.kind, (False, None, None))[1]

    @computed_field(description="a one-line load snippet")
    @property
    def load(self) -> str | None:
        return ARTIFACT_KINDS.get(self.kind, (False, None, None))[2]


class MetricsOut(BaseModel):
    job_id: str
    status: str
    metrics: dict | None


class SensitivityOut(BaseModel):
    job_id: str
    status: str
    sensitivity: dict | None = Field(description="{metric, group_size, layers: [{tensor, type, parameters, bytes: "
                                                  "{int8, int4, int3}, loss: {int8, int4, int3}}], complete}")


class UsageKind(BaseModel):
    bytes: int
    count: int


class UsageOut(BaseModel):
    """What the tenant stores against its quota, by kind."""
    used_bytes: int
    quota_bytes: int
    models: UsageKind
    datasets: UsageKind
    artifacts: UsageKind
    active_jobs: int = Field(description="queued or running")
    artifact_retention_days: int | None = Field(description="artifacts of finished jobs are deleted after this "
                                                            "many days (the tenant's setting, else the service's); "
                                                            "null: kept until deleted")


class TenantSettingsOut(BaseModel):
    tenant: str
    callback_url: str | None = Field(description="the webhook of jobs submitted without their own callback_url")
    artifact_retention_days: int | None = Field(description="this tenant's artifact retention; null: the service's")
    service_artifact_retention_days: int | None = Field(description="the service's retention "
                                                                    "(MODELPRESS_ARTIFACT_RETENTION_DAYS); null: none")
    webhook_secret_set: bool = Field(description="a signing secret exists; it is shown only when rotated "
                                                 "(POST /v1/tenant/webhook-secret)")


class TenantSettingsPatch(BaseModel):
    """The fields given are set; null sets one back to the service default."""
    model_config = ConfigDict(extra="forbid")

    callback_url: str | None = Field(None, max_length=2048)
    artifact_retention_days: int | None = Field(None, gt=0, le=36500)


class WebhookSecretOut(BaseModel):
    webhook_secret: str = Field(description="the HMAC-SHA256 key of X-Modelpress-Signature (its UTF-8 bytes); "
                                            "shown only now")


class RecipeOut(BaseModel):
    name: str
    description: str
    stages: list[dict]


class ErrorOut(BaseModel):
    """Every 4xx/5xx except 422 validation errors: one human-readable message."""

    detail: str


ERROR_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorOut, "description": "missing or invalid API key (when authentication is on)"},
    404: {"model": ErrorOut, "description": "no such object for this tenant"},
    429: {"model": ErrorOut, "description": "rate or job limit; see Retry-After"},
    503: {"model": ErrorOut, "description": "database unavailable; see Retry-After"},
}
