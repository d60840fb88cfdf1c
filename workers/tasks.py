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

from compression.job import CompressionError, JobCancelled
from storage import jobs
from storage.blob_refs import drop_if_unreferenced
from storage.models import Artifact, Dataset, Job, JobStatus, Model
from storage.retry import with_db_retry
from workers.celery_app import RUN_JOB, app
from workers.model_options import resolved_options
from workers.runtime import Runtime, runtime
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


def execute(rt: Runtime, job: Job, model: Model, worker: str,
            datasets: dict[str, tuple[Path, str]] | None = None, options: dict | None = None) -> JobStatus:
    """`datasets`: {role: (blob path, format)}; `options`: the model's loader options resolved for the
    child (default: as stored). Training checkpoints live in the blob store under the
    job's id, so an attempt after a crash resumes; they are dropped once the job is finished."""
    progress = _Progress()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(rt, job.id, worker, progress, stop), daemon=True)
    beat.start()
    stored: list[dict] = []  # artifact rows to insert, as plain values (rebuilt on each DB retry)
    status, error, metrics = JobStatus.failed, None, None
    try:
        with tempfile.TemporaryDirectory(prefix=f"{job.id}-") as tmp:
            output = run_job_in_child(
                rt.blobs.local_path(model.blob_key), model.format, options if options is not None else model.options or {},
                job.pipeline,
                Path(tmp) / "out", on_progress=progress.update, is_cancelled=progress.cancelled.is_set,
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
    return status


@app.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str | None:
    rt = runtime()
    # The pid tells a restarted worker apart from the one that died under the same name.
    worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"

    def claim() -> tuple[Job | None, Model | None, dict, dict | str]:
        with rt.sessions() as s:
            job = jobs.claim(s, job_id, worker)
            if job is None:
                return None, None, {}, {}
            model = s.get(Model, job.model_id)
            found = {role: s.get(Dataset, ds_id) for role, ds_id in (job.data or {}).items()}
            try:
                options = resolved_options(s, rt.blobs, model)
                if job.teacher_model_id:   # an uploaded teacher: the job's model is the student
                    teacher = s.get(Model, job.teacher_model_id)
                    options = {**options, "teacher_file": [str(rt.blobs.local_path(teacher.blob_key)),
                                                           teacher.format, resolved_options(s, rt.blobs, teacher)]}
            except LookupError as exc:
                options = str(exc)
            return job, model, found, options

    job, model, found, options = with_db_retry(claim)
    if job is None:
        log.info("job %s not claimable (finished, cancelled or taken); skipping", job_id)
        return None
    missing = [role for role, ds in found.items() if ds is None]
    # deleting a dataset is refused while a job or model uses it; this is the last line of defence
    problem = f"the {', '.join(missing)} dataset was deleted" if missing else options if isinstance(options, str) \
        else None
    if problem:
        def fail() -> None:
            with rt.sessions() as s:
                jobs.finish(s, job.id, worker, JobStatus.failed, error=problem)
        with_db_retry(fail)
        return JobStatus.failed.value
    datasets = {role: (rt.blobs.local_path(ds.blob_key), ds.format) for role, ds in found.items()}
    return execute(rt, job, model, worker, datasets, options).value
