"""The job document: what `GET /v1/jobs/{id}` answers and what a webhook POSTs, defined once for the API
and the workers."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import Session

from storage.models import Job


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


# What the document shows, read by primary key: a finished job's metrics (hundreds of KB on goal jobs) stay in
# the database, which hands over their quality verdict only.
_DOCUMENT_COLUMNS = (Job.id, Job.model_id, Job.status, Job.recipe, Job.pipeline, Job.queue, Job.data,
                     Job.teacher_model_id, Job.stage, Job.progress, Job.progress_detail, Job.error,
                     Job.metrics["quality"].label("quality"), Job.callback_url, Job.callback_status,
                     Job.callback_log, Job.attempts, Job.cancel_requested, Job.created_at, Job.started_at,
                     Job.finished_at)


def document_query() -> Select:
    """The document's columns of one job; binds `job_id` and `owner`."""
    return select(*_DOCUMENT_COLUMNS).where(Job.id == bindparam("job_id"), Job.owner == bindparam("owner"))


def job_document(columns: dict) -> JobOut:
    """The job document from `document_query`'s columns, the same as `JobOut.model_validate(job)` of the
    whole row."""
    doc = dict(columns)
    url, status, log = doc.pop("callback_url"), doc.pop("callback_status"), doc.pop("callback_log")
    doc["callback"] = {"url": url, "status": status, "deliveries": log or []} if url else None
    return JobOut.model_validate(doc)


def read_job_document(session: Session | Connection, owner: str, job_id: str) -> JobOut | None:
    """None: unknown id or another tenant's."""
    row = session.execute(document_query(), {"job_id": job_id, "owner": owner}).one_or_none()
    return job_document(row._mapping) if row is not None else None


def document_etag(body: bytes) -> str:
    """A strong validator of the document's bytes (If-None-Match -> 304 while nothing changed)."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def webhook_body(job) -> bytes:
    """The job document as a webhook sends it: without the delivery log, so every attempt of one event sends
    the same bytes."""
    doc = JobOut.model_validate(job).model_dump(mode="json", exclude={"callback"})
    return json.dumps({**doc, "callback": {"url": job.callback_url}}, separators=(",", ":")).encode()
