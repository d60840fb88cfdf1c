"""What a tenant stores, for quotas."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Artifact, Dataset, Job, JobStatus, Model


def usage_by_kind(session: Session, owner: str) -> dict[str, dict[str, int]]:
    """{"models" | "datasets" | "artifacts": {"bytes", "count"}} (bytes as rows count them: a blob two rows
    share counts twice, as the quota does)."""
    out = {}
    for name, table in (("models", Model), ("datasets", Dataset), ("artifacts", Artifact)):
        count, total = session.execute(select(func.count(), func.coalesce(func.sum(table.size_bytes), 0))
                                       .where(table.owner == owner)).one()
        out[name] = {"bytes": int(total), "count": int(count)}
    return out


def usage_bytes(session: Session, owner: str) -> int:
    return sum(kind["bytes"] for kind in usage_by_kind(session, owner).values())


def active_jobs(session: Session, owner: str) -> int:
    active = (JobStatus.queued.value, JobStatus.running.value)
    return session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner, Job.status.in_(active)))
