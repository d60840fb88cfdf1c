"""Artifact downloads: streamed from the blob store, Range supported, checksum in headers."""
from __future__ import annotations

import base64

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from api.ownership import get_owned
from api.deps import BlobsDep, OwnerDep, SessionDep
from api.schemas import ErrorOut, ArtifactOut
from storage.deletion import delete_artifacts
from storage.models import Artifact, Job

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])


def get_owned_artifact(session, owner: str, artifact_id: str) -> Artifact:
    return get_owned(session, owner, Artifact, artifact_id)


def artifact_out(art: Artifact, request: Request, metrics: dict | None) -> ArtifactOut:
    """The row, its download URL, and what the job measured of this very file."""
    metrics = metrics or {}
    before = metrics.get("size_bytes_before")
    check = (metrics.get("verification") or {}).get(art.name) or {}
    return ArtifactOut.model_validate(art).model_copy(update={
        "download_url": str(request.url_for("download_artifact", artifact_id=art.id)),
        "ratio": round(before / art.size_bytes, 3) if before and art.size_bytes and art.kind != "report" else None,
        "output_max_abs_diff": check.get("output_max_abs_diff"),
        "output_mean_cosine": check.get("output_mean_cosine"),
        "latency_ms": check.get("latency_ms"), "latency_batch": check.get("latency_batch")})


@router.get("/{artifact_id}", response_model=ArtifactOut, responses={404: {"model": ErrorOut, "description": "unknown id"}})
def get_artifact(artifact_id: str, request: Request, session: SessionDep, owner: OwnerDep) -> ArtifactOut:
    art = get_owned_artifact(session, owner, artifact_id)
    job = session.get(Job, art.job_id)
    return artifact_out(art, request, job.metrics if job else None)


@router.get("/{artifact_id}/download", name="download_artifact",
            response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Range"},
                       404: {"model": ErrorOut, "description": "unknown id"}})
def download_artifact(artifact_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> FileResponse:
    """The artifact's bytes; `X-Checksum-SHA256` and `Repr-Digest` carry its sha256."""
    art = get_owned_artifact(session, owner, artifact_id)
    path = blobs.local_path(art.blob_key)
    if not path.is_file():
        raise HTTPException(410, f"artifact {artifact_id} is listed but its bytes are gone")
    digest_b64 = base64.b64encode(bytes.fromhex(art.sha256)).decode()
    return FileResponse(
        path, filename=art.name, media_type="application/octet-stream",
        headers={"X-Checksum-SHA256": art.sha256, "Repr-Digest": f"sha-256=:{digest_b64}:",
                 "ETag": f'"{art.sha256}"'},
    )


@router.delete("/{artifact_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"model": ErrorOut, "description": "unknown id"}})
def delete_artifact(artifact_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> Response:
    """Delete one file of a finished job (its bytes go once no other row shares them); the job and its
    metrics stay."""
    delete_artifacts(session, blobs, [get_owned_artifact(session, owner, artifact_id)])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
