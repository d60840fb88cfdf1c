"""Artifact downloads: streamed from the blob store (Range supported) or redirected to a presigned URL of the
object store, checksum in headers."""
from __future__ import annotations

import base64
import re
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from api.ownership import get_owned
from api.deps import BlobsDep, OwnerDep, SessionDep
from api.schemas import ErrorOut, ArtifactOut
from storage.blobs import BlobMissing, BlobStore
from storage.deletion import delete_artifacts
from storage.models import Artifact, Job

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


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
                       307: {"description": "to a short-lived presigned URL of the object store "
                                            "(MODELPRESS_S3_PRESIGN_DOWNLOADS)"},
                       404: {"model": ErrorOut, "description": "unknown id"},
                       410: {"model": ErrorOut, "description": "listed, but its bytes are gone"},
                       416: {"model": ErrorOut, "description": "the range is outside the file"}})
def download_artifact(artifact_id: str, request: Request, session: SessionDep, owner: OwnerDep,
                      blobs: BlobsDep) -> Response:
    """The artifact's bytes; `X-Checksum-SHA256` and `Repr-Digest` carry its sha256."""
    art = get_owned_artifact(session, owner, artifact_id)
    digest_b64 = base64.b64encode(bytes.fromhex(art.sha256)).decode()
    headers = {"X-Checksum-SHA256": art.sha256, "Repr-Digest": f"sha-256=:{digest_b64}:", "ETag": f'"{art.sha256}"'}
    url = blobs.presigned_url(art.blob_key, art.name)
    if url is not None:   # the bytes bypass the API; the client checks them against the listed sha256
        return RedirectResponse(url, status_code=307, headers=headers)
    path = blobs.local_file(art.blob_key)
    if path is not None:
        return FileResponse(path, filename=art.name, media_type="application/octet-stream", headers=headers)
    return _streamed(blobs, art, request.headers.get("range"), headers)


def _streamed(blobs: BlobStore, art: Artifact, range_header: str | None, headers: dict) -> Response:
    """From a remote store through the API, one Range as FileResponse serves a local file."""
    size = art.size_bytes
    span = _one_range(range_header, size)
    start, end = span or (0, size - 1)
    try:
        body = blobs.open_range(art.blob_key, start, end) if size else iter(())
    except BlobMissing:
        raise HTTPException(410, f"artifact {art.id} is listed but its bytes are gone") from None
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(end - start + 1),
               "Content-Disposition": _attachment(art.name)}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(body, status_code=206 if span else 200, media_type="application/octet-stream",
                             headers=headers)


def _one_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None for the whole file: no Range, several ranges or
    a malformed one (RFC 9110 lets a server ignore those). A range outside the file is a 416."""
    m = _RANGE.fullmatch((header or "").strip())
    if m is None or not (m[1] or m[2]) or (m[1] and m[2] and int(m[2]) < int(m[1])):
        return None
    if not m[1]:   # the last N bytes
        start, end = max(size - int(m[2]), 0), size - 1
    else:
        start, end = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
    if start > end or start >= size:
        raise HTTPException(416, f"range {header!r} is outside the file of {size} bytes",
                            headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _attachment(filename: str) -> str:
    quoted = quote(filename)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != filename else f'attachment; filename="{filename}"'


@router.delete("/{artifact_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"model": ErrorOut, "description": "unknown id"}})
def delete_artifact(artifact_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> Response:
    """Delete one file of a finished job (its bytes go once no other row shares them); the job and its
    metrics stay."""
    delete_artifacts(session, blobs, [get_owned_artifact(session, owner, artifact_id)])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
