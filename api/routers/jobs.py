"""Jobs: submit, poll, list, cancel, metrics, artifacts."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.ownership import get_owned
from api.deps import BlobsDep, OwnerDep, RuntimeDep, SessionDep
from api.pagination import paginate
from api.routers.datasets import get_owned_dataset
from api.routers.models import get_owned_model
from api.routers.artifacts import artifact_out
from api.routers.tenant import checked_callback_url
from api.schemas import ErrorOut, ArtifactOut, JobCreate, JobOut, JobPage, MetricsOut, SensitivityOut
from compression.data.datasets import check_dataset_against_model
from compression.pipeline import check_pipeline_against_model, check_pipeline_data, parse_pipeline
from compression.registry import RECIPES, STAGE_SPECS
from core.documents import document_etag
from core.webhooks import announce
from storage import jobs as job_state, tenants
from storage.deletion import delete_jobs
from storage.models import Artifact, CallbackStatus, InspectionStatus, Job, JobStatus, utcnow
from storage.usage import active_jobs

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

TRAINING_KINDS = {spec.model_fields["kind"].annotation.__args__[0] for spec in STAGE_SPECS if spec.trains}
NOT_FOUND = {404: {"model": ErrorOut, "description": "unknown id"}}


def _datasets(session, owner: str, body: JobCreate, model) -> dict[str, str]:
    """{role: dataset id} after checking ownership (404) and fit to the model (422)."""
    refs = {role: ds_id for role, ds_id in (body.data.model_dump() if body.data else {}).items() if ds_id}
    problems = []
    for role, ds_id in refs.items():
        dataset = get_owned_dataset(session, owner, ds_id)
        problems += check_dataset_against_model(dataset.summary, model.summary or {}, model.options or {}, role)
    if problems:
        raise RequestValidationError([{"loc": ("body", "data"), "type": "value_error", "msg": p} for p in problems])
    return refs


def _validated_pipeline(body: JobCreate, model_summary: dict, roles: dict[str, str]) -> dict:
    if body.analyze is not None:
        problems = []
        if not {"calibration", "eval"} & set(roles):
            problems.append("an analyze job measures each layer on data: give data.calibration or data.eval")
        if (model_summary or {}).get("format") == "onnx":
            problems.append("analyze jobs take torch formats for now")
        if body.teacher_model_id:
            problems.append("analyze jobs do not take a teacher")
        if problems:
            raise RequestValidationError([{"loc": ("body", "analyze"), "type": "value_error", "msg": p}
                                          for p in problems])
        return {"analyze": body.analyze.model_dump(mode="json", exclude_none=True)}
    if body.goal is not None:
        problems = []
        if not {"calibration", "eval"} & set(roles):
            problems.append("a goal job measures candidates on data: give data.calibration or data.eval (labels "
                            "let it use top-1; unlabeled data measures agreement/cosine against your model)")
        if (model_summary or {}).get("format") == "onnx":
            problems.append("goal jobs take torch formats for now; for an ONNX model submit a recipe or pipeline")
        if body.teacher_model_id:
            problems.append("goal jobs do not take a teacher (no retraining inside the search yet)")
        if problems:
            raise RequestValidationError([{"loc": ("body", "goal"), "type": "value_error", "msg": p} for p in problems])
        return {"goal": body.goal.model_dump(mode="json", exclude_none=True)}
    if body.recipe is not None:
        recipe = RECIPES.get(body.recipe)
        if recipe is None:
            raise RequestValidationError([{
                "loc": ("body", "recipe"), "type": "value_error", "input": body.recipe,
                "msg": f"unknown recipe; known: {', '.join(sorted(RECIPES))}",
            }])
        data, where = {"stages": recipe.stages}, ("body", "recipe")
    else:
        data, where = body.pipeline, ("body", "pipeline")
    if body.quality is not None:
        if isinstance(data, dict) and data.get("quality") is not None:
            raise RequestValidationError([{"loc": ("body", "quality"), "type": "value_error",
                                           "msg": "give quality once: in the body or in the pipeline"}])
        data = {**data, "quality": body.quality.model_dump(mode="json", exclude_none=True)}
    try:
        spec = parse_pipeline(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": (*where, *err["loc"])} for err in exc.errors(include_url=False)]
        ) from None
    # a stage without the data it needs is refused now rather than failing an hour later
    problems = check_pipeline_against_model(spec, model_summary) + check_pipeline_data(
        spec, has_calibration="calibration" in roles, has_train="train" in roles)
    if problems:
        raise RequestValidationError([{"loc": where, "type": "value_error", "msg": p} for p in problems])
    dumped = spec.model_dump(mode="json")
    quality = dumped.pop("quality", None)
    if quality is not None:   # only what was given: the stored pipeline reads as the user wrote it
        dumped["quality"] = {k: v for k, v in quality.items() if v is not None}
    return dumped


def _require_loadable(model) -> None:
    """A model the worker could not load is refused now. While the inspection is pending the job is
    accepted: the worker loads the model and every stage checks it before running (the same checks)."""
    if model.inspection_status == InspectionStatus.failed.value:
        raise RequestValidationError([{"loc": ("body", "model_id"), "type": "value_error", "input": model.id,
                                       "msg": f"the model cannot be loaded: {model.inspection_error}"}])


def _teacher(session, owner: str, body: JobCreate, model, pipeline: dict):
    """An uploaded teacher for the job's training stages (the job's model is then the student)."""
    if body.teacher_model_id is None:
        return None
    teacher = get_owned_model(session, owner, body.teacher_model_id)
    problems = []
    if not any(stage["kind"] in TRAINING_KINDS for stage in pipeline["stages"]):
        problems.append("teacher_model_id is used by training stages (finetune, distill); the pipeline has none")
    if teacher.format == "onnx" or model.format == "onnx":
        problems.append("distilling from or into an ONNX model is not supported; upload torch formats")
    if teacher.inspection_status == InspectionStatus.failed.value:
        problems.append(f"the teacher model cannot be loaded: {teacher.inspection_error}")
    outs = [(m.summary or {}).get("inspection", {}).get("output_features") for m in (teacher, model)]
    if None not in outs and outs[0] != outs[1]:
        problems.append(f"the teacher has {outs[0]} output features, the model {outs[1]}: their outputs must match")
    if problems:
        raise RequestValidationError([{"loc": ("body", "teacher_model_id"), "type": "value_error", "msg": p}
                                      for p in problems])
    return teacher


def _request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut,
             responses={**NOT_FOUND, 200: {"description": "an earlier submit with the same Idempotency-Key",
                                          "model": JobOut},
                        409: {"model": ErrorOut, "description": "Idempotency-Key reused with a different body"},
                        429: {"model": ErrorOut, "description": "too many active jobs for this tenant"}})
def submit_job(
    body: JobCreate, response: Response, session: SessionDep, owner: OwnerDep, rt: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job:
    """Validate the whole pipeline against the model, store the job, queue its id."""
    request_hash = _request_hash(body)
    if idempotency_key:
        earlier = _job_for_key(session, owner, idempotency_key, request_hash)
        if earlier is not None:
            response.status_code = status.HTTP_200_OK
            return earlier
    model = get_owned_model(session, owner, body.model_id)
    roles = _datasets(session, owner, body, model)
    pipeline = _validated_pipeline(body, model.summary, roles)
    teacher = _teacher(session, owner, body, model, pipeline)
    callback_url = checked_callback_url(body.callback_url, rt.settings) or tenants.default_callback(session, owner)
    _require_loadable(model)   # after the body's own errors, which the caller can fix in this request
    if active_jobs(session, owner) >= rt.settings.tenant_max_active_jobs:
        raise HTTPException(429, f"at most {rt.settings.tenant_max_active_jobs} queued or running jobs per tenant",
                            headers={"Retry-After": "30"})
    job = Job(owner=owner, model_id=model.id, recipe=body.recipe, pipeline=pipeline, data=roles or None,
              teacher_model_id=teacher.id if teacher is not None else None, callback_url=callback_url,
              queue=rt.settings.queue_name(body.device or rt.settings.default_queue),
              idempotency_key=idempotency_key, request_hash=request_hash, enqueued_at=utcnow())
    session.add(job)
    try:
        session.commit()
    except IntegrityError:  # a concurrent submit with the same key won the race
        session.rollback()
        earlier = _job_for_key(session, owner, idempotency_key, request_hash)
        if earlier is None:
            raise
        response.status_code = status.HTTP_200_OK
        return earlier
    try:
        rt.enqueue(job.id, job.queue)
    except Exception:
        # The job is safe in the DB; the reaper re-sends queued jobs the broker never got.
        log.warning("broker unavailable while queueing %s; the reaper will retry", job.id, exc_info=True)
    return job


def _job_for_key(session, owner: str, key: str | None, request_hash: str) -> Job | None:
    if not key:
        return None
    job = session.scalar(select(Job).where(Job.owner == owner, Job.idempotency_key == key))
    if job is not None and job.request_hash != request_hash:
        raise HTTPException(409, "this Idempotency-Key was already used for a different request")
    return job


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep, owner: OwnerDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    model_id: str | None = None,
    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
) -> dict:
    stmt = select(Job).where(Job.owner == owner)
    if status_filter is not None:
        stmt = stmt.where(Job.status == status_filter.value)
    if model_id is not None:
        stmt = stmt.where(Job.model_id == model_id)
    return paginate(session, stmt.order_by(Job.created_at.desc(), Job.id), limit, offset)


def get_owned_job(session, owner: str, job_id: str) -> Job:
    return get_owned(session, owner, Job, job_id)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get("/{job_id}", response_model=JobOut,
            responses={**NOT_FOUND, 304: {"description": "unchanged since the ETag sent as If-None-Match"}})
async def get_job(job_id: str, request: Request, owner: OwnerDep,
                  if_none_match: Annotated[str | None, Header(max_length=1024)] = None) -> Response:
    """The job document, with an `ETag`: a poller that sends it back as `If-None-Match` gets an empty 304
    while nothing changed. The hot path of every pipeline that polls: async, one indexed read of the columns
    shown (api/reads.py)."""
    doc = await request.app.state.document_reads.document(owner, job_id)
    if doc is None:
        raise HTTPException(404, f"job {job_id} not found")
    body = doc.model_dump_json().encode()
    headers = {"ETag": document_etag(body), "Cache-Control": "private, no-cache"}
    if if_none_match and _etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "job already finished"}})
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep, rt: RuntimeDep) -> Job:
    """Cancel a queued job at once, or ask a running one to stop at its next check."""
    job = get_owned_job(session, owner, job_id)
    if JobStatus(job.status).finished:
        raise HTTPException(409, f"job {job_id} is already {job.status}")
    job = job_state.request_cancel(session, job)
    if job.callback_status == CallbackStatus.pending.value:   # a queued job: cancelled, so finished, now
        announce(rt, [job.id])
    return job


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "the job is queued or running"}})
def delete_job(job_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> Response:
    """Delete a finished job with its artifacts (and their bytes); a queued or running job must be
    cancelled and end first."""
    job = get_owned_job(session, owner, job_id)
    if not JobStatus(job.status).finished:
        raise HTTPException(409, f"job {job_id} is {job.status}; cancel it (POST /v1/jobs/{job_id}/cancel) and "
                                 "delete it once it has ended")
    delete_jobs(session, blobs, [job])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=NOT_FOUND)
def job_metrics(job_id: str, session: SessionDep, owner: OwnerDep) -> dict:
    """Sizes, parameters and output fidelity; null until the job succeeds."""
    job = get_owned_job(session, owner, job_id)
    return dict(job_id=job.id, status=job.status, metrics=job.metrics)


@router.get("/{job_id}/sensitivity", response_model=SensitivityOut, responses=NOT_FOUND)
def job_sensitivity(job_id: str, session: SessionDep, owner: OwnerDep) -> dict:
    """A goal job's per-layer sensitivity: each weight layer alone at int8/int4/int3 (groups of 64) and the
    measured change of the constraint's metric on the selection data; null for other jobs."""
    job = get_owned_job(session, owner, job_id)
    metrics = job.metrics or {}
    return dict(job_id=job.id, status=job.status,
                sensitivity=metrics.get("sensitivity") or (metrics.get("goal") or {}).get("sensitivity"))


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut], responses=NOT_FOUND)
def job_artifacts(job_id: str, request: Request, session: SessionDep, owner: OwnerDep) -> list[ArtifactOut]:
    job = get_owned_job(session, owner, job_id)
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)).all()
    return [artifact_out(a, request, job.metrics) for a in rows]
