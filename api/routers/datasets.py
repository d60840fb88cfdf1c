"""Dataset uploads: calibration, training and evaluation data that jobs name by role."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.dataset_checks import check_dataset
from api.deps import BlobsDep, OwnerDep, RuntimeDep, SessionDep, SettingsDep
from api.ownership import get_owned
from api.pagination import paginate
from api.routers.models import _usage
from api.schemas import DatasetOut, DatasetPage, ErrorOut
from api.upload import receive_upload
from storage.blob_refs import drop_if_unreferenced, insert_with_blob
from storage.deletion import ACTIVE
from storage.models import Dataset, Job, Model

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])



@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses={413: {"model": ErrorOut, "description": "too large"},
               415: {"model": ErrorOut, "description": "not a dataset file"},
               422: {"model": ErrorOut, "description": "recognised but invalid"}},
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description":
                                ".npz or safetensors (inputs/x or input_0.., optional labels/y), CSV or Parquet "
                                "(numeric columns, optional 'label'), JSONL text ({\"text\": ..., \"label\": ...})"}},
    }}}}},
)
async def upload_dataset(request: Request, rt: RuntimeDep, blobs: BlobsDep, settings: SettingsDep,
                         owner: OwnerDep) -> Dataset:
    """Upload a dataset (multipart field `file`); the format is detected from content and the whole
    file is validated before anything is stored."""
    quota_left = max(settings.tenant_storage_quota_bytes - await run_in_threadpool(_usage, rt, owner), 0)
    cap = min(settings.max_upload_bytes, settings.max_dataset_bytes)
    limit = min(quota_left, cap)
    message = (f"storage quota of {settings.tenant_storage_quota_bytes} bytes exceeded; {quota_left} bytes left"
               if quota_left < cap else f"datasets are limited to {cap} bytes (MODELPRESS_MAX_DATASET_BYTES)")
    upload = await receive_upload(request, blobs, "file", limit, message, settings.upload_chunk_bytes)
    pending = upload.blob
    try:
        if upload.fields:
            raise HTTPException(422, f"unknown form field(s): {', '.join(sorted(upload.fields))}")
        # in a checker process (DatasetError: 4xx, api/app.py)
        summary = await check_dataset(pending.path, settings.job_memory_limit_bytes)
        key = await run_in_threadpool(blobs.commit, owner, pending)   # an S3 store uploads it now
    except BaseException:
        blobs.discard(pending)
        raise
    dataset = Dataset(owner=owner, filename=upload.filename, format=summary["format"], size_bytes=pending.size,
                      sha256=pending.sha256, blob_key=key, summary=summary)
    return await run_in_threadpool(insert_with_blob, rt.sessions, blobs, dataset)


@router.get("", response_model=DatasetPage)
def list_datasets(session: SessionDep, owner: OwnerDep, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0)) -> dict:
    stmt = select(Dataset).where(Dataset.owner == owner).order_by(Dataset.created_at.desc(), Dataset.id)
    return paginate(session, stmt, limit, offset)


def get_owned_dataset(session, owner: str, dataset_id: str) -> Dataset:
    return get_owned(session, owner, Dataset, dataset_id)


@router.get("/{dataset_id}", response_model=DatasetOut, responses={404: {"model": ErrorOut, "description": "unknown id"}})
def get_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> Dataset:
    return get_owned_dataset(session, owner, dataset_id)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"model": ErrorOut, "description": "unknown id"},
                          409: {"model": ErrorOut, "description": "a queued or running job, or a model's "
                                                                   "sample inputs, use it"}})
def delete_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> Response:
    """Delete a dataset and its bytes. Finished jobs keep their metrics; a queued or running job
    that names the dataset must finish (or be cancelled) first."""
    dataset = get_owned_dataset(session, owner, dataset_id)
    users = [job.id for job in session.scalars(select(Job).where(Job.owner == owner, Job.status.in_(ACTIVE)))
             if dataset.id in (job.data or {}).values()]
    if users:
        raise HTTPException(409, f"dataset {dataset_id} is used by active job(s) {', '.join(users[:5])}; "
                                 "wait for them or cancel them first")
    models = [m.id for m in session.scalars(select(Model).where(Model.owner == owner))
              if (m.options or {}).get("sample_dataset") == dataset.id]
    if models:
        raise HTTPException(409, f"dataset {dataset_id} holds the sample inputs of model(s) {', '.join(models[:5])}")
    key = dataset.blob_key
    session.delete(dataset)
    session.commit()
    drop_if_unreferenced(session, blobs, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
