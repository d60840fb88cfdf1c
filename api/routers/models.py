"""Model uploads."""
from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.pagination import paginate
from api.ownership import get_owned
from api.deps import BlobsDep, OwnerDep, RuntimeDep, SessionDep, SettingsDep
from api.limits import loads_strict
from api.schemas import ErrorOut, ModelOut, ModelPage
from api.upload import receive_upload
from compression.formats import sniff
from compression.formats.options import loader_options, parse_upload_options
from storage.blob_refs import insert_with_blob
from storage.deletion import ACTIVE, delete_model, jobs_of_model
from storage.models import Model, utcnow
from storage.usage import usage_bytes

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    responses={413: {"model": ErrorOut, "description": "too large"}, 415: {"model": ErrorOut, "description": "not a model file"},
               422: {"model": ErrorOut, "description": "recognised but refused"}},
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "architecture": {"type": "string", "description": "built-in architecture for bare weights"},
            "config": {"type": "string", "description": "for bare weights of a transformers model: its config.json "
                                                        "(JSON object; a model type built into transformers)"},
            "options": {"type": "string", "description": "JSON object of loader options: {\"input_shape\": [batch, ...], "
                                                         "\"input_dtype\": \"float32\"} or {\"sample_dataset\": \"ds_…\"} "
                                                         "(an uploaded dataset whose first samples are the example inputs)"},
        }}}}}},
)
async def upload_model(request: Request, rt: RuntimeDep, blobs: BlobsDep, settings: SettingsDep,
                       owner: OwnerDep) -> Model:
    """Upload a model file (multipart field `file`). The format is detected from content; a worker then
    loads the model once (`inspection_status` pending -> done | failed, `summary.inspection`)."""
    # No database connection is held while the body streams in: sessions are
    # opened for the quota check and the final insert only.
    quota_left = settings.tenant_storage_quota_bytes - await run_in_threadpool(_usage, rt, owner)
    if quota_left < settings.max_upload_bytes:
        upload = await receive_upload(request, blobs, "file", max(quota_left, 0),
                                      f"storage quota of {settings.tenant_storage_quota_bytes} bytes exceeded; "
                                      f"{max(quota_left, 0)} bytes left", settings.upload_chunk_bytes)
    else:
        upload = await receive_upload(request, blobs, "file", settings.max_upload_bytes,
                                      chunk_bytes=settings.upload_chunk_bytes)
    pending = upload.blob
    try:
        options = _parse_options(upload.fields)
        if options.get("sample_dataset") is not None:
            await run_in_threadpool(_check_sample_dataset, rt, owner, options["sample_dataset"])
        # headers and indexes only: loading the model is the worker's inspection (ModelFormatError: 4xx)
        info = await run_in_threadpool(sniff, pending.path, architecture=options.get("architecture"),
                                       hf_config=options.get("hf_config"), parse_onnx=False)
        key = await run_in_threadpool(blobs.commit, owner, pending)   # an S3 store uploads it now
    except BaseException:
        blobs.discard(pending)
        raise
    model = Model(owner=owner, filename=upload.filename, format=info.format, size_bytes=pending.size,
                  sha256=pending.sha256, blob_key=key, options=options, summary=info.summary,
                  inspection_enqueued_at=utcnow())
    model = await run_in_threadpool(insert_with_blob, rt.sessions, blobs, model)
    try:
        await run_in_threadpool(rt.enqueue_inspection, model.id)
    except Exception:   # the model is stored; it stays pending and submit accepts it (the job loads it anyway)
        log.warning("broker unavailable while queueing the inspection of %s", model.id, exc_info=True)
    return model


def _check_sample_dataset(rt, owner: str, dataset_id) -> None:
    """options.sample_dataset: an uploaded tensor dataset whose first samples are the model's example inputs."""
    from storage.models import Dataset

    with rt.sessions() as session:
        if get_owned(session, owner, Dataset, dataset_id).summary.get("text"):
            raise HTTPException(422, "options.sample_dataset must hold tensors; text models build their sample "
                                     "inputs with their own tokenizer")


def _usage(rt, owner: str) -> int:
    with rt.sessions() as session:
        return usage_bytes(session, owner)


def _parse_options(fields: dict[str, str]) -> dict:
    """The stored LoaderOptions: the user's `options` JSON (an allow-list) plus the form fields."""
    unknown = set(fields) - {"architecture", "options", "config"}
    if unknown:
        raise HTTPException(422, f"unknown form field(s): {', '.join(sorted(unknown))}")
    raw: object = {}
    if "options" in fields:
        try:
            raw = loads_strict(fields["options"])
        except ValueError as exc:
            raise HTTPException(422, f"'options' must be a JSON object: {exc}") from None
    options = parse_upload_options(raw).model_dump(exclude_none=True)
    if fields.get("architecture"):
        options["architecture"] = fields["architecture"]
    if "config" in fields:
        try:
            options["hf_config"] = loads_strict(fields["config"])
        except ValueError as exc:
            raise HTTPException(422, f"'config' must be a transformers config.json (JSON object): {exc}") from None
    return loader_options(options, where="upload", fix="").model_dump(exclude_none=True)


@router.get("", response_model=ModelPage)
def list_models(session: SessionDep, owner: OwnerDep, limit: int = Query(50, ge=1, le=500),
                offset: int = Query(0, ge=0)) -> dict:
    stmt = select(Model).where(Model.owner == owner).order_by(Model.created_at.desc(), Model.id)
    return paginate(session, stmt, limit, offset)


def get_owned_model(session, owner: str, model_id: str) -> Model:
    return get_owned(session, owner, Model, model_id)


@router.get("/{model_id}", response_model=ModelOut, responses={404: {"model": ErrorOut, "description": "unknown id"}})
def get_model(model_id: str, session: SessionDep, owner: OwnerDep) -> Model:
    return get_owned_model(session, owner, model_id)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"model": ErrorOut, "description": "unknown id"},
                          409: {"model": ErrorOut, "description": "jobs use the model (cascade=true deletes finished "
                                                                   "ones; queued or running ones must end first)"}})
def delete_model_route(model_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep,
                       cascade: bool = Query(False, description="also delete the finished jobs made from the "
                                                                 "model (or taught by it) with their artifacts")
                       ) -> Response:
    """Delete an uploaded model and its bytes. Jobs made from it keep it alive unless `cascade=true`;
    a queued or running job always does (cancel it first)."""
    model = get_owned_model(session, owner, model_id)
    jobs = jobs_of_model(session, model)
    active = [j.id for j in jobs if j.status in ACTIVE]
    if active:
        raise HTTPException(409, f"model {model_id} is used by active job(s) {', '.join(active[:5])}; "
                                 "wait for them or cancel them first")
    if jobs and not cascade:
        raise HTTPException(409, f"model {model_id} has {len(jobs)} finished job(s) ({', '.join(j.id for j in jobs[:5])}); "
                                 "delete them first, or DELETE with ?cascade=true to delete them with their artifacts")
    delete_model(session, blobs, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
