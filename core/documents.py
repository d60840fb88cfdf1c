"""The job document: what `GET /v1/jobs/{id}` answers and what a webhook POSTs, defined once for the API
and the workers."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer


class UtcOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    @field_serializer("*", when_used="json")
    def _utc(self, value: Any) -> Any:
        # SQLite hands datetimes back naive; they are stored as UTC.
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC).isoformat()
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return value


class DeliveryOut(BaseModel):
    attempt: int
    at: str = Field(description="when the attempt started (UTC, ISO 8601)")
    status_code: int | None = Field(None, description="the receiver's answer; null when none came")
    error: str | None = Field(None, description="why the attempt did not deliver (null: delivered)")
    duration_ms: float
    next_attempt_in_s: float | None = Field(None, description="the backoff before the next attempt, if any")


class CallbackOut(BaseModel):
    url: str
    status: Literal["pending", "delivered", "failed"] | None = Field(
        None, description="null until the job finishes; failed after the last attempt or a refused target")
    deliveries: list[DeliveryOut] = Field(default_factory=list, description="every attempt, oldest first")


class JobOut(UtcOut):
    id: str
    model_id: str
    status: str
    recipe: str | None
    pipeline: dict
    queue: str
    data: dict | None
    teacher_model_id: str | None = None
    stage: str | None
    progress: float
    progress_detail: dict | None = Field(None, description="training stages: stage, epoch, epochs, step, loss, "
                                                           "latest eval metrics")
    error: str | None
    quality: dict | None = Field(None, description="finished jobs: did the compressed model keep the upload's "
                                                   "quality? {metric, value, baseline, min | max_drop | max, "
                                                   "passed, inputs, real_inputs, summary, note}. A job can "
                                                   "succeed (it ran) with passed=false (it destroyed the model)")
    callback: CallbackOut | None = Field(None, description="the webhook called when the job finishes and its "
                                                           "delivery attempts")
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def webhook_body(job) -> bytes:
    """The job document as a webhook sends it: without the delivery log, so every attempt of one event sends
    the same bytes."""
    doc = JobOut.model_validate(job).model_dump(mode="json", exclude={"callback"})
    return json.dumps({**doc, "callback": {"url": job.callback_url}}, separators=(",", ":")).encode()
