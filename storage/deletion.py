"""Deleting what a tenant stores: artifacts, jobs (with their artifacts) and models (with their jobs),
and the retention sweep. Rows go in one transaction; blobs go after it commits, each only when no row
refers to it any more (content addressing: two rows may share one blob). Whether a deletion is allowed
(active jobs) is the caller's decision: these functions only delete."""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from storage.blob_refs import drop_if_unreferenced
from storage.blobs import BlobStore
from storage.models import Artifact, Job, JobStatus, Model

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


def jobs_of_model(session: Session, model: Model) -> list[Job]:
    """Jobs that compress the model or learn from it as their teacher."""
    return list(session.scalars(select(Job).where(
        Job.owner == model.owner, or_(Job.model_id == model.id, Job.teacher_model_id == model.id))))


def _drop_blobs(session: Session, blobs: BlobStore, keys: set[str]) -> int:
    return sum(drop_if_unreferenced(session, blobs, key) for key in sorted(keys))


def delete_artifacts(session: Session, blobs: BlobStore, artifacts: list[Artifact]) -> int:
    """Returns the bytes the rows accounted for."""
    keys = {a.blob_key for a in artifacts}
    freed = sum(a.size_bytes for a in artifacts)
    for art in artifacts:
        session.delete(art)
    session.commit()
    _drop_blobs(session, blobs, keys)
    return freed


def delete_jobs(session: Session, blobs: BlobStore, jobs: list[Job]) -> int:
    ids = [j.id for j in jobs]
    artifacts = list(session.scalars(select(Artifact).where(Artifact.job_id.in_(ids)))) if ids else []
    keys = {a.blob_key for a in artifacts}
    freed = sum(a.size_bytes for a in artifacts)
    for art in artifacts:
        session.delete(art)
    session.flush()   # artifacts reference their job
    for job in jobs:
        session.delete(job)
    session.commit()
    _drop_blobs(session, blobs, keys)
    return freed


def delete_model(session: Session, blobs: BlobStore, model: Model) -> int:
    """The model with every job made from it (callers refuse active ones first)."""
    freed = delete_jobs(session, blobs, jobs_of_model(session, model)) + model.size_bytes
    key = model.blob_key
    session.delete(model)
    session.commit()
    drop_if_unreferenced(session, blobs, key)
    return freed


def sweep_expired_artifacts(session: Session, blobs: BlobStore, older_than: datetime, limit: int = 500, *,
                            owners: Collection[str] | None = None, exclude: Collection[str] = ()) -> int:
    """Retention: artifacts of finished jobs created before `older_than` (the jobs and their metrics stay),
    of the `owners` given (default: all) except `exclude` (tenants with a retention of their own)."""
    stmt = (select(Artifact).join(Job, Job.id == Artifact.job_id)
            .where(Artifact.created_at < older_than, Job.status.not_in(ACTIVE)))
    if owners is not None:
        stmt = stmt.where(Artifact.owner.in_(list(owners)))
    if exclude:
        stmt = stmt.where(Artifact.owner.not_in(list(exclude)))
    expired = list(session.scalars(stmt.limit(limit)))
    delete_artifacts(session, blobs, expired)
    return len(expired)
