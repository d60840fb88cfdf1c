"""Database tables. The database is the source of truth for job state."""
from __future__ import annotations

import enum
import secrets
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LOCAL_TENANT = "local"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    pass


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class InspectionStatus(str, enum.Enum):
    """A model is loaded once in a worker after upload (workers/inspection.py)."""
    pending = "pending"
    done = "done"
    failed = "failed"


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(255))
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)   # "inspection": what the worker found on loading it
    inspection_status: Mapped[str] = mapped_column(String(16), default=InspectionStatus.pending.value,
                                                   server_default=InspectionStatus.pending.value)
    inspection_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # when the inspection was last sent to the broker (None: never); the reaper re-sends lost ones
    inspection_enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """An uploaded dataset; jobs name datasets by role (calibration, train, eval) in Job.data."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(255))
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CallbackStatus(str, enum.Enum):
    """The webhook of a finished job (Job.callback_url); null on the row until the job finishes."""
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_status_created", "owner", "status", "created_at"),
        Index("ix_jobs_callback_status_due", "callback_status", "callback_due_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    recipe: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pipeline: Mapped[dict] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)              # {role: dataset id}
    # training stages learn from this uploaded model instead of the job's own (an uploaded student)
    teacher_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    progress_detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)   # training: epoch, step, loss, eval
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # webhook: POSTed the job document when the job finishes (core/webhooks.py); set pending in the same UPDATE
    # that finishes the job, so a delivery the broker lost is found by the reaper (due long ago)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    callback_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    callback_log: Mapped[list | None] = mapped_column(JSON, nullable=True)   # one entry per attempt

    @property
    def quality(self) -> dict | None:
        """The finished job's quality verdict (metrics["quality"]); None while it runs."""
        return (self.metrics or {}).get("quality")

    @property
    def callback(self) -> dict | None:
        """The webhook as the job document shows it (never the tenant's secret)."""
        if not self.callback_url:
            return None
        return {"url": self.callback_url, "status": self.callback_status, "deliveries": self.callback_log or []}



class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("art"))
    owner: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TenantSettings(Base):
    """What a tenant configures for itself. Tenants are the strings on API keys; a row exists once a tenant
    changes a setting or needs a webhook secret."""

    __tablename__ = "tenant_settings"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    # HMAC key of webhook signatures; kept in clear (signing needs it), shown once when rotated
    webhook_secret: Mapped[str] = mapped_column(String(128))
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)   # jobs without their own callback_url
    artifact_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)   # None: the service's
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """An API key belongs to one tenant. Only a hash is stored: keys are random
    256-bit tokens, so a plain SHA-256 (no slow KDF) cannot be brute-forced."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
