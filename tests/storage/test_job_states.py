"""Job state transitions and the reaper's decisions, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest

from storage import jobs
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.models import Job, JobStatus, Model, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def session(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    engine = make_engine(url)
    with make_sessionmaker(engine)() as s:
        yield s
    engine.dispose()


def _job(session) -> Job:
    model = Model(owner="t", filename="m", format="safetensors", size_bytes=1, sha256="0" * 64, blob_key="k")
    session.add(model)
    session.flush()
    job = Job(owner="t", model_id=model.id, pipeline={"stages": []}, queue="q", enqueued_at=utcnow())
    session.add(job)
    session.commit()
    return job


def _reap(session, now=None, max_attempts=2):
    return jobs.reap(session, stale_after=timedelta(seconds=10), max_attempts=max_attempts,
                     requeue_queued_after=timedelta(minutes=10), now=now)


def test_only_one_worker_can_claim(session):
    job = _job(session)
    assert jobs.claim(session, job.id, "w1").attempts == 1
    assert jobs.claim(session, job.id, "w2") is None


def test_heartbeat_reports_cancellation(session):
    job = _job(session)
    jobs.claim(session, job.id, "w1")
    assert jobs.heartbeat(session, job.id, "w1", "quantize", 0.5) is False
    jobs.request_cancel(session, session.get(Job, job.id))
    assert jobs.heartbeat(session, job.id, "w1", "quantize", 0.6) is True


def test_cancel_queued_is_immediate_and_blocks_claim(session):
    job = _job(session)
    assert jobs.request_cancel(session, job).status == "cancelled"
    assert jobs.claim(session, job.id, "w1") is None


def test_finish_only_by_the_claiming_worker(session):
    job = _job(session)
    jobs.claim(session, job.id, "w1")
    assert not jobs.finish(session, job.id, "w2", JobStatus.succeeded, metrics={})
    assert jobs.finish(session, job.id, "w1", JobStatus.succeeded, metrics={"x": 1})
    assert session.get(Job, job.id, populate_existing=True).status == "succeeded"


def test_stale_job_is_requeued_then_failed_after_max_attempts(session):
    job = _job(session)
    jobs.claim(session, job.id, "w1")
    later = utcnow() + timedelta(seconds=60)
    assert _reap(session, now=later).requeued == [job.id]
    refreshed = session.get(Job, job.id, populate_existing=True)
    assert refreshed.status == "queued" and "stopped responding" in refreshed.error

    jobs.claim(session, job.id, "w2")  # attempt 2, and that worker dies too
    result = _reap(session, now=utcnow() + timedelta(seconds=60))
    assert result.failed == [job.id]
    failed = session.get(Job, job.id, populate_existing=True)
    assert failed.status == "failed" and "gave up after 2 attempt(s)" in failed.error


def test_fresh_running_job_is_left_alone(session):
    job = _job(session)
    jobs.claim(session, job.id, "w1")
    result = _reap(session)
    assert result.requeued == [] and result.failed == []
    assert session.get(Job, job.id, populate_existing=True).status == "running"


def test_forgotten_queued_job_is_resent(session):
    job = _job(session)
    result = _reap(session, now=utcnow() + timedelta(hours=1))
    assert result.resent == [job.id]
