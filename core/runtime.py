"""Per-process resources shared by the API and the workers: engine, sessions, blobs."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings
from storage.blobs import BlobStore, LocalBlobStore
from storage.db import make_engine, make_sessionmaker


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore

    @cached_property
    def celery(self):
        from core.broker import make_celery

        return make_celery(self.settings)

    def enqueue(self, job_id: str, queue: str) -> None:
        """Only the job id travels; the worker reads everything else from the DB."""
        from core.broker import RUN_JOB

        self.celery.send_task(RUN_JOB, args=[job_id], queue=queue)

    def enqueue_inspection(self, model_id: str) -> None:
        """The default device's queue: every deployment has a worker on it."""
        from core.broker import INSPECT_MODEL

        queue = self.settings.queue_name(self.settings.default_queue)
        self.celery.send_task(INSPECT_MODEL, args=[model_id], queue=queue)

    def enqueue_webhook(self, job_id: str) -> None:
        """Deliver a finished job's webhook (the job row says where and holds the attempt log)."""
        from core.broker import DELIVER_WEBHOOK, WEBHOOK_QUEUE

        self.celery.send_task(DELIVER_WEBHOOK, args=[job_id], queue=self.settings.queue_name(WEBHOOK_QUEUE))


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.resolved_storage_dir)
    from storage.s3 import S3BlobStore   # boto3 is imported only where the store is S3

    return S3BlobStore(
        settings.s3_bucket, tmp_dir=settings.resolved_scratch_dir / "uploads", prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
        access_key=_secret(settings.s3_access_key), secret_key=_secret(settings.s3_secret_key),
        presign_s=settings.s3_presign_downloads, presign_endpoint_url=settings.s3_public_endpoint_url,
        multipart_threshold=settings.s3_multipart_threshold_bytes)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def make_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.resolved_database_url)
    return Runtime(settings, engine, make_sessionmaker(engine), make_blob_store(settings))


@lru_cache
def runtime() -> Runtime:
    return make_runtime(get_settings())
