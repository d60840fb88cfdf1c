"""The second task: inspect an upload by loading it once, in a sandboxed child under the job limits
(never in the API process), and store what it is in Model.summary["inspection"].

Idempotent: only a pending model is updated (one conditional UPDATE), so a redelivered or duplicate
message changes nothing."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import update

from compression.job.runner import CompressionError
from storage.blobs import BlobChecksumMismatch, BlobMissing
from storage.models import InspectionStatus, Model
from storage.retry import with_db_retry
from workers.celery_app import INSPECT_MODEL, app
from workers.model_options import ModelRef, model_ref, scratch_folder
from core.runtime import Runtime, runtime
from workers.sandbox import inspect_in_child

log = logging.getLogger(__name__)
PENDING = InspectionStatus.pending.value


def run_inspection(rt: Runtime, model_id: str) -> str | None:
    """-> the new inspection status, or None when there was nothing to do."""
    def fetch() -> tuple[Model | None, ModelRef | None, str | None]:
        with rt.sessions() as s:
            model = s.get(Model, model_id)
            try:
                return model, (model_ref(s, model) if model is not None else None), None
            except LookupError as exc:
                return model, None, str(exc)

    model, source, problem = with_db_retry(fetch)
    if model is None or model.inspection_status != PENDING:
        return None
    values: dict = {"inspection_status": InspectionStatus.failed.value}
    try:
        if problem:
            raise CompressionError(problem)
        with scratch_folder(rt.settings.resolved_scratch_dir, f"inspect-{model_id}-") as tmp:
            found = inspect_in_child(source.fetch(rt.blobs, Path(tmp)), time_limit_s=rt.settings.job_time_limit_s,
                                     memory_limit_bytes=rt.settings.job_memory_limit_bytes)
        # ONNX: the API only checked framing, so the full header summary comes from here
        values = {"inspection_status": InspectionStatus.done.value,
                  "summary": {**(found["summary"] or model.summary or {}), "inspection": found["inspection"]}}
    except CompressionError as exc:   # the child's reason: refused by the loader, a limit, a crash
        values["inspection_error"] = getattr(exc, "message", None) or str(exc)
    except (BlobMissing, BlobChecksumMismatch) as exc:
        values["inspection_error"] = str(exc)
    except Exception as exc:
        log.exception("inspection of %s crashed", model_id)
        values["inspection_error"] = f"internal error: {type(exc).__name__}: {exc}"[:2000]

    def record() -> None:
        with rt.sessions() as s:
            s.execute(update(Model).where(Model.id == model_id, Model.inspection_status == PENDING).values(**values))
            s.commit()

    with_db_retry(record)
    return values["inspection_status"]


@app.task(name=INSPECT_MODEL)
def inspect_model(model_id: str) -> str | None:
    return run_inspection(runtime(), model_id)
