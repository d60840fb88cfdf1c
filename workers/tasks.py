"""The one task: run a job by id. Idempotent: a redelivered or duplicate message
finds the job already claimed or finished and does nothing."""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from compression.formats.options import loader_options
from compression.job.runner import CompressionError, JobCancelled, JobOutput
from storage import jobs
from storage.blob_refs import drop_if_unreferenced
from storage.blobs import BlobChecksumMismatch, BlobMissing
from storage.models import Artifact, Dataset, Job, JobStatus, Model
from storage.retry import with_db_retry
from workers.celery_app import RUN_JOB, app
from workers.model_options import ModelRef, model_ref, scratch_folder
from core.runtime import Runtime, runtime
from core.webhooks import announce
from workers.sandbox import Device, run_job_in_child

log = logging.getLogger(__name__)


class _Progress:
    """Progress reported by the pipeline, flushed to the DB by the heartbeat."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.fraction = 0.0
        self.detail: dict | None = None   # the latest training record: epoch, step, loss, eval
        self.cancelled = threading.Event()
        self.checkpoints: Path | None = None   # where the child writes them, once restored from the store

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


def _checkpoint_loop(rt: Runtime, job_id: str, progress: _Progress, stop: threading.Event) -> None:
    """Saves the job's training checkpoints to the blob store as they are written (a remote store: another
    worker resumes from them; the local folder is itself the store, so this is a no-op there)."""
    while not stop.wait(rt.settings.heartbeat_interval_s):
        if progress.checkpoints is None:
            continue
        try:
            rt.blobs.save_scratch(f"checkpoints/{job_id}", progress.checkpoints)
        except Exception:  # the next round retries; the job goes on either way
            log.warning("saving the checkpoints of %s failed", job_id, exc_info=True)


def _fetch_and_run(rt: Runtime, job: Job, model: Model | ModelRef, datasets: dict[str, tuple[str, str]] | None,
                   teacher: ModelRef | None, folder: Path, progress: _Progress) -> JobOutput:
    """Every file the job reads is fetched into this worker's folder first (the local store lends its own),
    with the checkpoints an earlier attempt saved. A job sent to the cpu queue stays off the GPU (and under
    the memory guard) even on a host whose worker serves both queues."""
    progress.checkpoints = rt.blobs.restore_scratch(f"checkpoints/{job.id}", folder / "checkpoints")
    inputs = folder / "in"
    ref = model if isinstance(model, ModelRef) else \
        ModelRef(model.blob_key, model.format, loader_options(model.options))
    files = {role: (rt.blobs.fetch(key, inputs), fmt) for role, (key, fmt) in (datasets or {}).items()}
    return run_job_in_child(
        ref.fetch(rt.blobs, inputs), job.pipeline, folder / "out",
        teacher=teacher.fetch(rt.blobs, inputs) if teacher else None,
        on_progress=progress.update, is_cancelled=progress.cancelled.is_set, on_log=progress.log,
        memory_limit_bytes=rt.settings.job_memory_limit_bytes, time_limit_s=rt.settings.job_time_limit_s,
        datasets=files, checkpoint_dir=progress.checkpoints, device=job_device(rt, job))


def job_device(rt: Runtime, job: Job) -> Device:
    return "cpu" if job.queue == rt.settings.queue_name("cpu") else "auto"


def execute(rt: Runtime, job: Job, model: Model | ModelRef, worker: str,
            datasets: dict[str, tuple[str, str]] | None = None, teacher: ModelRef | None = None) -> JobStatus:
    """`model`: the job's model as a ModelRef resolved by `run_job` (a bare row: its blob and stored
    options, no sample dataset); `datasets`: {role: (blob key, format)}; `teacher`: an uploaded teacher.
    Training checkpoints are kept in the blob store under the job's id, so an attempt after a crash (on any
    worker) resumes; they are dropped once the job is finished."""
    progress = _Progress()
    stop = threading.Event()
    stored: list[dict] = []  # artifact rows to insert, as plain values (rebuilt on each DB retry)
    status, error, metrics = JobStatus.failed, None, None
    with scratch_folder(rt.settings.resolved_scratch_dir, f"{job.id}-") as tmp:
        threads = [threading.Thread(target=_heartbeat_loop, args=(rt, job.id, worker, progress, stop), daemon=True),
                   threading.Thread(target=_checkpoint_loop, args=(rt, job.id, progress, stop), daemon=True)]
        for thread in threads:
            thread.start()
        try:
            output = _fetch_and_run(rt, job, model, datasets, teacher, Path(tmp), progress)
            for art in output.artifacts:   # appended one by one: a failure midway still knows what went up
                key, size, sha = rt.blobs.put_file(job.owner, art.path)
                stored.append(dict(owner=job.owner, job_id=job.id, name=art.name, kind=art.kind,
                                   size_bytes=size, sha256=sha, blob_key=key))
            status, metrics = JobStatus.succeeded, output.metrics
        except JobCancelled:
            status, error = JobStatus.cancelled, "cancelled by user"
        except CompressionError as exc:  # the child turns every user-facing error into this
            error = getattr(exc, "message", None) or str(exc)
        except (BlobMissing, BlobChecksumMismatch) as exc:
            error = str(exc)
        except SoftTimeLimitExceeded:
            error = f"time limit of {rt.settings.job_time_limit_s} s exceeded"
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    if _record(rt, job, worker, status, error, metrics, stored):
        # a job taken away from this worker keeps its checkpoints for the next attempt
        rt.blobs.drop_scratch(f"checkpoints/{job.id}")
        if job.callback_url:
            announce(rt, [job.id])
    return status


def _record(rt: Runtime, job: Job, worker: str, status: JobStatus, error: str | None, metrics: dict | None,
            stored: list[dict]) -> bool:
    """The final state with its artifacts in one transaction; False when the job was taken away meanwhile."""
    kept = stored if status is JobStatus.succeeded else []   # a failure after some uploads keeps none

    def record() -> bool:
        with rt.sessions() as s:
            done = jobs.finish(s, job.id, worker, status, error=error, metrics=metrics,
                               artifacts=[Artifact(**row) for row in kept])
            if not done:
                log.warning("job %s was taken away from %s before it finished", job.id, worker)
            for row in stored[len(kept) if done else 0:]:   # rows not inserted: their blobs go, unless shared
                drop_if_unreferenced(s, rt.blobs, row["blob_key"])
            return done

    return with_db_retry(record)


@app.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str | None:
    # The pid tells a restarted worker apart from the one that died under the same name.
    return claim_and_run(runtime(), job_id, f"{self.request.hostname or socket.gethostname()}:{os.getpid()}")


def claim_and_run(rt: Runtime, job_id: str, worker: str) -> str | None:
    """Claim the job, resolve every file it reads from rows its tenant owns, run it. -> final status."""
    def claim() -> tuple[Job | None, dict, ModelRef | None, ModelRef | None, str | None]:
        """Every file the job opens comes from a row owned by the job's tenant."""
        with rt.sessions() as s:
            job = jobs.claim(s, job_id, worker)
            if job is None:
                return None, {}, None, None, None
            found = {role: _owned(s, Dataset, ds_id, job.owner) for role, ds_id in (job.data or {}).items()}
            try:
                model = _owned(s, Model, job.model_id, job.owner)
                source = model_ref(s, model) if model else None
                teacher = None
                if job.teacher_model_id:   # an uploaded teacher: the job's model is the student
                    teacher_row = _owned(s, Model, job.teacher_model_id, job.owner)
                    if teacher_row is None:
                        raise LookupError(f"the teacher model {job.teacher_model_id} is not this tenant's "
                                          "(deleted, or never theirs)")
                    teacher = model_ref(s, teacher_row)
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
    datasets = {role: (ds.blob_key, ds.format) for role, ds in found.items()}
    return execute(rt, job, source, worker, datasets, teacher).value


def _owned(session, table, row_id: str | None, owner: str):
    """The row, or None when it is gone or belongs to another tenant (the API checked at submit; this is
    the worker's own check, so a blob it fetches always belongs to the job's tenant)."""
    row = session.get(table, row_id) if row_id else None
    return row if row is not None and row.owner == owner else None
