"""The one task: run a job by id. Idempotent: a redelivered or duplicate message
finds the job already claimed or finished and does nothing."""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from compression.job.runner import CompressionError, JobCancelled
from compression.job.sources import ModelSource
from storage import jobs
from storage.blob_refs import drop_if_unreferenced
from storage.models import Artifact, Dataset, Job, JobStatus, Model
from storage.retry import with_db_retry
from workers.celery_app import RUN_JOB, app
from workers.model_options import model_source
from core.runtime import Runtime, runtime
from core.webhooks import announce
from workers.sandbox import run_job_in_child

log = logging.getLogger(__name__)


class _Progress:
    """Progress reported by the pipeline, flushed to the DB by the heartbeat."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.fraction = 0.0
        self.detail: dict | None = None   # the latest training record: epoch, step, loss, eval
        self.cancelled = threading.Event()

    def update(self, stage: str | None, fraction: float) -> None:
        self.stage, self.fraction = stage, max(0.0, min(1.0, fraction))

    def log(self, record: dict) -> None:
        self.detail = record


def _heartbeat_loop(rt: Runtime, job_id: str, worker: str, progress: _Progress, stop: threading.Event) -> None:
    while not stop.wait(rt.settings.heartbeat_interval_s):
        try:
            with rt.sessions() as s:
                if jobs.heartbeat(s, job_id, worker, progress.stage, progress.fraction, progress.detail):
                    progress.cancelled.set()
        except Exception:  # a DB blip must not kill the job; the next beat retries
            log.warning("heartbeat for %s failed", job_id, exc_info=True)


def execute(rt: Runtime, job: Job, model: Model | ModelSource, worker: str,
            datasets: dict[str, tuple[Path, str]] | None = None, teacher: ModelSource | None = None) -> JobStatus:
    """`model`: the job's model as a ModelSource resolved by `run_job` (a bare row: its blob and stored
    options, no sample dataset); `datasets`: {role: (blob path, format)}; `teacher`: an uploaded teacher.
    Training checkpoints live in the blob store under the job's id, so an attempt after a crash resumes;
    they are dropped once the job is finished."""
    progress = _Progress()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(rt, job.id, worker, progress, stop), daemon=True)
    beat.start()
    stored: list[dict] = []  # artifact rows to insert, as plain values (rebuilt on each DB retry)
    status, error, metrics = JobStatus.failed, None, None
    try:
        with tempfile.TemporaryDirectory(prefix=f"{job.id}-") as tmp:
            source = model if isinstance(model, ModelSource) else \
                ModelSource(rt.blobs.local_path(model.blob_key), model.format, model.options)
            output = run_job_in_child(
                source, job.pipeline, Path(tmp) / "out", teacher=teacher, on_progress=progress.update, is_cancelled=progress.cancelled.is_set,
                memory_limit_bytes=rt.settings.job_memory_limit_bytes, time_limit_s=rt.settings.job_time_limit_s,
                datasets=datasets, checkpoint_dir=rt.blobs.scratch_dir(f"checkpoints/{job.id}"), on_log=progress.log,
            )
            for art in output.artifacts:
                key, size, sha = rt.blobs.put_file(job.owner, art.path)
                stored.append(dict(owner=job.owner, job_id=job.id, name=art.name, kind=art.kind,
                                   size_bytes=size, sha256=sha, blob_key=key))
            status, metrics = JobStatus.succeeded, output.metrics
    except JobCancelled:
        status, error = JobStatus.cancelled, "cancelled by user"
    except CompressionError as exc:  # the child turns every user-facing error into this
        error = getattr(exc, "message", None) or str(exc)
    except SoftTimeLimitExceeded:
        error = f"time limit of {rt.settings.job_time_limit_s} s exceeded"
    except Exception as exc:
        log.exception("job %s crashed", job.id)
        error = f"internal error: {type(exc).__name__}: {exc}"
    finally:
        stop.set()
        beat.join()

    def record() -> bool:
        with rt.sessions() as s:
            if not jobs.finish(s, job.id, worker, status, error=error, metrics=metrics,
                               artifacts=[Artifact(**row) for row in stored]):
                log.warning("job %s was taken away from %s before it finished", job.id, worker)
                for row in stored:
                    drop_if_unreferenced(s, rt.blobs, row["blob_key"])
                return False
            return True

    if with_db_retry(record):   # a job taken away from this worker keeps its checkpoints for the next attempt
        rt.blobs.drop_scratch(f"checkpoints/{job.id}")
        if job.callback_url:
            announce(rt, [job.id])
    return status


@app.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str | None:
    # The pid tells a restarted worker apart from the one that died under the same name.
    return claim_and_run(runtime(), job_id, f"{self.request.hostname or socket.gethostname()}:{os.getpid()}")


def claim_and_run(rt: Runtime, job_id: str, worker: str) -> str | None:
    """Claim the job, resolve every file it reads from rows its tenant owns, run it. -> final status."""
    def claim() -> tuple[Job | None, dict, ModelSource | None, ModelSource | None, str | None]:
        """Every file the job opens comes from a row owned by the job's tenant."""
        with rt.sessions() as s:
            job = jobs.claim(s, job_id, worker)
            if job is None:
                return None, {}, None, None, None
            found = {role: _owned(s, Dataset, ds_id, job.owner) for role, ds_id in (job.data or {}).items()}
            try:
                model = _owned(s, Model, job.model_id, job.owner)
                source = model_source(s, rt.blobs, model) if model else None
                teacher = None
                if job.teacher_model_id:   # an uploaded teacher: the job's model is the student
                    teacher_row = _owned(s, Model, job.teacher_model_id, job.owner)
                    if teacher_row is None:
                        raise LookupError(f"the teacher model {job.teacher_model_id} is not this tenant's "
                                          "(deleted, or never theirs)")
                    teacher = model_source(s, rt.blobs, teacher_row)
            except LookupError as exc:
                return job, found, None, None, str(exc)
            return job, found, source, teacher, None if source else \
                f"the model {job.model_id} is not this tenant's (deleted, or never theirs)"

    job, found, source, teacher, problem = with_db_retry(claim)
    if job is None:
        log.info("job %s not claimable (finished, cancelled or taken); skipping", job_id)
        return None
    missing = [role for role, ds in found.items() if ds is None]
    # deleting a dataset is refused while a job or model uses it; this is the last line of defence
    problem = f"the {', '.join(missing)} dataset was deleted" if missing else problem
    if problem:
        def fail() -> bool:
            with rt.sessions() as s:
                return jobs.finish(s, job.id, worker, JobStatus.failed, error=problem)
        if with_db_retry(fail) and job.callback_url:
            announce(rt, [job.id])
        return JobStatus.failed.value
    datasets = {role: (rt.blobs.local_path(ds.blob_key), ds.format) for role, ds in found.items()}
    return execute(rt, job, source, worker, datasets, teacher).value


def _owned(session, table, row_id: str | None, owner: str):
    """The row, or None when it is gone or belongs to another tenant (the API checked at submit; this is
    the worker's own check, so a path it opens always belongs to the job's tenant)."""
    row = session.get(table, row_id) if row_id else None
    return row if row is not None and row.owner == owner else None
