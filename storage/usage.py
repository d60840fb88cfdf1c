"""What a tenant stores, for quotas."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Artifact, Dataset, Job, JobStatus, Model


def usage_bytes(session: Session, owner: str) -> int:
    models = session.scalar(select(func.coalesce(func.sum(Model.size_bytes), 0)).where(Model.owner == owner))
    artifacts = session.scalar(select(func.coalesce(func.sum(Artifact.size_bytes), 0)).where(Artifact.owner == owner))
    datasets = session.scalar(select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.owner == owner))
    return int(models) + int(artifacts) + int(datasets)


def active_jobs(session: Session, owner: str) -> int:
    active = (JobStatus.queued.value, JobStatus.running.value)
    return session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(active)))
