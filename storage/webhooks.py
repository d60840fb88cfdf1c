"""Webhook delivery state on the job row: pending from the UPDATE that finishes the job, an attempt log,
and the due time of the next attempt (the reaper re-sends deliveries long past due)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from storage.models import CallbackStatus, Job, utcnow

PENDING = CallbackStatus.pending.value


def on_finish(now: datetime) -> dict:
    """Values for every UPDATE that finishes a job: its webhook, if it has one, becomes due now."""
    has_callback = Job.callback_url.is_not(None)
    return {"callback_status": case((has_callback, PENDING), else_=None),
            "callback_due_at": case((has_callback, now), else_=None)}


def pending_among(session: Session, job_ids: list[str]) -> list[str]:
    if not job_ids:
        return []
    return list(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.callback_status == PENDING)))


def record_attempt(session: Session, job_id: str, entry: dict, status: CallbackStatus,
                   due_at: datetime | None) -> bool:
    """Append one attempt and the delivery's new state; False when it is no longer pending (a duplicate
    message already finished it)."""
    # FOR UPDATE: a duplicate message appending at the same time waits (PostgreSQL; SQLite writes one at a time)
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.callback_status != PENDING:
        session.rollback()
        return False
    job.callback_log = [*(job.callback_log or []), entry]
    job.callback_status, job.callback_due_at = status.value, due_at
    session.commit()
    return True


def overdue(session: Session, late_by: timedelta, now: datetime | None = None) -> list[str]:
    """Pending deliveries due more than `late_by` ago (the broker lost the message, or the API or worker died
    between finishing the job and sending it); they become due now and the caller sends them again."""
    now = now or utcnow()
    ids = list(session.scalars(select(Job.id).where(Job.callback_status == PENDING,
                                                    Job.callback_due_at < now - late_by).limit(500)))
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids), Job.callback_status == PENDING)
                        .values(callback_due_at=now))
    session.commit()
    return ids
