"""Job state transitions. Every transition is one conditional UPDATE, so two
workers (or a worker and the reaper) racing on one job cannot both win."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Artifact, Job, JobStatus, utcnow
from storage.webhooks import on_finish

FINISHED = [JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value]


def claim(session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> running for this worker; None if someone else has it or it is finished."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running.value,
            attempts=Job.attempts + 1,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            stage=None,
            progress=0.0,
            progress_detail=None,   # the new attempt reports its own epochs (resumed ones start past the checkpoint)
            error=None,
        )
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def heartbeat(session: Session, job_id: str, worker: str, stage: str | None, progress: float,
              detail: dict | None = None) -> bool:
    """Record liveness and progress. Returns True when cancellation was requested
    (or the job was taken away from this worker)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, Job.worker == worker)
        .values(heartbeat_at=utcnow(), stage=stage, progress=progress,
                **({"progress_detail": detail} if detail is not None else {}))
    )
    session.commit()
    if result.rowcount != 1:
        return True
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish(
    session: Session,
    job_id: str,
    worker: str,
    status: JobStatus,
    *,
    error: str | None = None,
    metrics: dict | None = None,
    artifacts: list[Artifact] = (),
) -> bool:
    """running -> finished, together with its artifacts (and its webhook made due), in one transaction."""
    now = utcnow()
    values: dict = dict(status=status.value, finished_at=now, error=error, **on_finish(now))
    if status is JobStatus.succeeded:
        values.update(progress=1.0, stage=None, metrics=metrics)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, Job.worker == worker)
        .values(**values)
    )
    if result.rowcount != 1:
        session.rollback()
        return False
    session.add_all(artifacts)
    session.commit()
    return True


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs are cancelled at once; running ones are flagged and the
    worker stops at its next check."""
    if job.status == JobStatus.queued.value:
        now = utcnow()
        session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.queued.value)
            .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now,
                    error="cancelled by user", **on_finish(now))
        )
    session.execute(
        update(Job).where(Job.id == job.id, Job.status.not_in(FINISHED)).values(cancel_requested=True)
    )
    session.commit()
    return session.get(Job, job.id, populate_existing=True)


@dataclass
class ReapResult:
    requeued: list[str]
    failed: list[str]
    resent: list[str]


def reap(
    session: Session,
    *,
    stale_after: timedelta,
    max_attempts: int,
    requeue_queued_after: timedelta,
    now: datetime | None = None,
) -> ReapResult:
    """Find jobs whose worker vanished and queued jobs the broker may have lost.

    Returns the ids the caller must (re)send to the broker.
    """
    now = now or utcnow()
    requeued, failed, resent = [], [], []
    stale = session.scalars(
        select(Job).where(Job.status == JobStatus.running.value, Job.heartbeat_at < now - stale_after)
    ).all()
    for job in stale:
        lost = f"worker {job.worker} stopped responding (no heartbeat for {stale_after.total_seconds():.0f} s)"
        if job.cancel_requested:
            values = dict(status=JobStatus.cancelled.value, finished_at=now, error="cancelled by user",
                          **on_finish(now))
            bucket = failed
        elif job.attempts >= max_attempts:
            values = dict(status=JobStatus.failed.value, finished_at=now,
                          error=f"{lost}; gave up after {job.attempts} attempt(s)", **on_finish(now))
            bucket = failed
        else:
            values = dict(status=JobStatus.queued.value, enqueued_at=now, worker=None,
                          error=f"{lost}; re-queued")
            bucket = requeued
        res = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.running.value, Job.heartbeat_at == job.heartbeat_at)
            .values(**values)
        )
        if res.rowcount == 1:
            bucket.append(job.id)
    forgotten = session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued.value, Job.enqueued_at < now - requeue_queued_after)
    ).all()
    for job_id in forgotten:
        session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.queued.value)
                        .values(enqueued_at=now))
        resent.append(job_id)
    session.commit()
    return ReapResult(requeued=requeued, failed=failed, resent=resent)

