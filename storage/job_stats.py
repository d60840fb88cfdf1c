"""Service-wide job figures for /metrics, aggregated by the database (GROUP BY, no rows loaded), never per
tenant: counts by status and queue, the age of the oldest queued job, and finished jobs' durations by what
they ran and how they ended."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Float, Text, case, cast, extract, func, select
from sqlalchemy.orm import Session

from storage.models import InspectionStatus, Job, JobStatus, Model

# Upper bounds (seconds) of the duration histogram: seconds-long presets up to multi-hour training jobs.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)

# A failed job's error text -> its class (first match wins; anything else is a user-fixable error the
# compression library raised). The texts are written by workers/tasks.py, workers/sandbox.py, storage/jobs.py.
ERROR_CLASSES = (
    ("internal error:%", "internal"),
    ("time limit of %", "time_limit"),
    ("%memory limit%", "memory_limit"),
    ("the job process %", "crashed"),
    ("worker % stopped responding%", "worker_lost"),
    ("the % dataset was deleted", "input_gone"),
    ("the model % is not this tenant's%", "input_gone"),
    ("the teacher model % is not this tenant's%", "input_gone"),
)


@dataclass
class FinishedGroup:
    recipe: str | None
    pipeline: str | None          # the pipeline as JSON text (the caller names the method from it)
    status: str
    error_class: str | None       # failed jobs only
    count: int                    # every finished job of the group
    timed: int                    # those that started (cancelled while queued have no duration)
    duration_sum: float
    bucket_counts: list[int]      # cumulative, one per DURATION_BUCKETS entry


def _duration(session: Session):
    if session.get_bind().dialect.name == "sqlite":   # SQLite keeps datetimes as text
        return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
    return cast(extract("epoch", Job.finished_at - Job.started_at), Float)


def jobs_by_status(session: Session) -> list[tuple[str, str, int]]:
    """[(status, queue, count)]."""
    rows = session.execute(select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue))
    return [(status, queue, int(n)) for status, queue, n in rows]


def oldest_queued_age_s(session: Session, now: datetime | None = None) -> dict[str, float]:
    """{queue: seconds the oldest queued job has waited since it was (last) queued}."""
    now = now or datetime.now(timezone.utc)
    rows = session.execute(select(Job.queue, func.min(func.coalesce(Job.enqueued_at, Job.created_at)))
                           .where(Job.status == JobStatus.queued.value).group_by(Job.queue))
    out = {}
    for queue, since in rows:
        if isinstance(since, str):   # SQLite aggregates hand back the stored text
            since = datetime.fromisoformat(since)
        if since is not None:
            since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
            out[queue] = max(0.0, (now - since).total_seconds())
    return out


def inspections_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Model.inspection_status, func.count()).group_by(Model.inspection_status))
    counts = {status.value: 0 for status in InspectionStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


def finished_jobs(session: Session) -> list[FinishedGroup]:
    """Finished jobs grouped by recipe, pipeline, status and error class, with their duration histogram."""
    error_class = case(*[(Job.error.like(pattern), name) for pattern, name in ERROR_CLASSES], else_="user")
    # grouped in an outer query by name: PostgreSQL cannot match a bound-parameter expression in GROUP BY
    rows = select(Job.recipe, cast(Job.pipeline, Text).label("pipeline"), Job.status,
                  case((Job.status == JobStatus.failed.value, error_class), else_=None).label("error_class"),
                  _duration(session).label("duration")) \
        .where(Job.finished_at.is_not(None), Job.status.in_([s.value for s in JobStatus if s.finished])).subquery()
    keys = (rows.c.recipe, rows.c.pipeline, rows.c.status, rows.c.error_class)
    result = session.execute(select(
        *keys, func.count(), func.count(rows.c.duration), func.coalesce(func.sum(rows.c.duration), 0.0),
        *[func.sum(case((rows.c.duration <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]).group_by(*keys))
    return [FinishedGroup(recipe, text, status, cls, int(n), int(timed), float(total), [int(b or 0) for b in buckets])
            for recipe, text, status, cls, n, timed, total, *buckets in result]
