"""One Settings object, read from MODELPRESS_* environment variables.

The embedded default (SQLite file, local blob folder, filesystem broker) lives
under MODELPRESS_HOME so a fresh machine needs no servers at all.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".modelpress"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPRESS_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    # Empty means "the embedded default under home"; see the resolved_* properties.
    database_url: str = ""
    broker_url: str = ""
    storage_dir: Path | None = None
    # This host's working folder: uploads on their way in (S3 backend), each job's inputs, outputs and checkpoints.
    scratch_dir: Path | None = None

    # Where blobs live: "local" (storage_dir, the embedded default: API and workers share the folder) or
    # "s3" (one bucket of an S3-compatible store: API and workers on other hosts share nothing else but the
    # database and the broker).
    blob_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None   # unset: AWS S3
    s3_bucket: str = ""
    s3_prefix: str = ""   # every object's key starts with it (several deployments in one bucket)
    s3_region: str | None = None
    # unset: boto3's own chain (AWS_* variables, instance or pod roles)
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    # Downloads: "off" streams them through the API (Range kept); N redirects (307) to a URL signed for N
    # seconds, so the bytes bypass the API. s3_public_endpoint_url: where clients reach the store, when it is
    # not s3_endpoint_url (a compose network name, say).
    s3_presign_downloads: int | None = Field(default=None, gt=0)
    s3_public_endpoint_url: str | None = None
    # blobs up to this size are one PUT whose sha256 the server checks; larger ones go up in parts of this size
    s3_multipart_threshold_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2)

    queue_prefix: str = "modelpress"
    default_queue: str = "cpu"

    # Off for the embedded default, which then only listens on loopback
    # (`modelpress up` refuses other addresses); on for every shared deployment.
    auth_enabled: bool = False

    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Datasets are validated whole in the API process before they are stored (unlike models, which a
    # worker inspects), so they get a smaller cap that bounds the API's memory per upload.
    max_dataset_bytes: int = Field(default=256 * 1024**2, gt=0)
    # Per-tenant limits (413/429 with Retry-After when exceeded).
    tenant_storage_quota_bytes: int = Field(default=50 * 1024**3, gt=0)
    tenant_max_active_jobs: int = Field(default=8, gt=0)
    tenant_requests_per_minute: int = Field(default=1200, gt=0)
    # Where request rates are counted (a `limits` storage URI): empty means the broker's Redis when the broker
    # is Redis, so every API process counts against one limit, else this process's memory (embedded default).
    rate_limit_url: str = ""
    # An API process remembers a key's tenant this long (0: ask the database on every request); a revoked
    # key keeps working at most this long. Saves a database round trip per request.
    api_key_cache_s: float = Field(default=5.0, ge=0, le=300)
    # GET /metrics answers only 'Authorization: Bearer <token>' when set (it shows no tenant data either way).
    metrics_token: SecretStr | None = Field(default=None, min_length=16)
    # Workers send Celery task events (for Flower or `celery events`); off by default: one broker message per
    # task state change.
    celery_events: bool = False
    # Artifacts of finished jobs older than this are deleted by the reaper (jobs and metrics stay);
    # unset keeps them until a user deletes them.
    artifact_retention_days: int | None = Field(default=None, gt=0)
    # JSON request bodies (job submits, settings); uploads are multipart and have their own limits above.
    max_json_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Webhooks (a job's callback_url): targets must resolve to public addresses only, except hosts named here
    # or addresses in networks listed here (comma-separated in the environment: "hooks.internal,10.1.0.0/16").
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    # attempt n+1 waits webhook_backoff_s * 2**(n-1) seconds (at most an hour)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Log lines as text or JSON objects; each carries the request's X-Request-ID.
    log_format: Literal["text", "json"] = "text"
    upload_chunk_bytes: int = Field(default=1024 * 1024, gt=0)

    # A running job whose worker stops heartbeating for this long is re-run
    # (up to max_attempts) or failed with a reason.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stale_job_after_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=2, ge=1)
    # A queued job not picked up for this long is sent to the broker again
    # (covers a broker that lost its messages).
    requeue_queued_after_s: float = Field(default=600.0, gt=0)
    reaper_interval_s: float = Field(default=10.0, gt=0)
    job_time_limit_s: int = Field(default=3600, gt=0)
    # Address-space limit of the child process that loads and compresses a model.
    job_memory_limit_bytes: int = Field(default=12 * 1024**3, gt=256 * 1024**2)

    @field_validator("webhook_allow_hosts", mode="before")
    @classmethod
    def _allow_list(cls, value: object) -> object:
        """Comma-separated in the environment; each entry a host name or an IP network, checked now (fail fast)."""
        entries = value.split(",") if isinstance(value, str) else value
        if not isinstance(entries, (list, tuple)):
            return value
        out = []
        for entry in (str(e).strip().lower() for e in entries):
            if not entry:
                continue
            try:
                out.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                if not entry.replace("-", "").replace(".", "").isalnum():
                    raise ValueError(f"MODELPRESS_WEBHOOK_ALLOW_HOSTS: {entry!r} is neither a host name nor an "
                                     "IP network (CIDR)") from None
                out.append(entry)
        return out

    @field_validator("s3_presign_downloads", mode="before")
    @classmethod
    def _presign(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "off", "false", "0") else value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise ValueError("MODELPRESS_BLOB_BACKEND=s3 needs MODELPRESS_S3_BUCKET")
        if self.s3_presign_downloads and self.blob_backend != "s3":
            raise ValueError("MODELPRESS_S3_PRESIGN_DOWNLOADS needs MODELPRESS_BLOB_BACKEND=s3")
        if self.stale_job_after_s <= 2 * self.heartbeat_interval_s:
            raise ValueError(
                "MODELPRESS_STALE_JOB_AFTER_S must exceed twice MODELPRESS_HEARTBEAT_INTERVAL_S, "
                "or healthy jobs would be declared lost"
            )
        db = self.resolved_database_url
        if not (db.startswith("sqlite") or db.startswith("postgresql")):
            raise ValueError(f"unsupported MODELPRESS_DATABASE_URL scheme: {db.split(':', 1)[0]!r}")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'modelpress.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def resolved_rate_limit_url(self) -> str:
        if self.rate_limit_url:
            return self.rate_limit_url
        broker = self.resolved_broker_url
        return broker if broker.startswith(("redis://", "rediss://")) else "memory://"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.home / "blobs"

    @property
    def resolved_scratch_dir(self) -> Path:
        return self.scratch_dir or self.home / "scratch"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    def queue_name(self, kind: str) -> str:
        return f"{self.queue_prefix}.{kind}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
