"""Live job state as server-sent events: `GET /v1/jobs/{id}/events`.

The stream polls the database every `POLL_INTERVAL_S` with a short-lived connection
(none is held between polls), sends an `event: job` with the job's state
whenever status, stage, progress (with training detail) or error change, and ends with `event: end` once
the job has finished. A stream lives at most `MAX_STREAM_S` seconds (the client
reconnects; EventSource does this on its own), and sends a comment line every
`KEEPALIVE_S` so proxies do not cut an idle stream.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, SessionDep
from api.routers.jobs import get_owned_job
from api.schemas import ErrorOut, JobOut
from storage.models import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0
MAX_STREAM_S = 300.0
RETRY_MS = 1000
_WATCHED = ("status", "stage", "progress", "progress_detail", "error", "cancel_requested", "attempts")


async def _snapshot(request: Request, owner: str, job_id: str) -> dict | None:
    doc = await request.app.state.document_reads.document(owner, job_id)   # a pooled connection per poll
    return doc.model_dump(mode="json") if doc is not None else None


def _event(name: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(request: Request, owner: str, first: dict, lifetime: float) -> AsyncIterator[bytes]:
    started = last_sent = time.monotonic()
    seq = 0
    state = first
    yield f"retry: {RETRY_MS}\n\n".encode()
    yield _event("job", state, seq)
    last_key = tuple(state.get(k) for k in _WATCHED)
    while not JobStatus(state["status"]).finished:
        now = time.monotonic()
        if now - started >= lifetime:
            # Bounded lifetime: tell the client to reconnect, then close.
            yield _event("reconnect", {"id": state["id"], "after_ms": RETRY_MS})
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_INTERVAL_S)
        fresh = await _snapshot(request, owner, state["id"])
        if fresh is None:  # deleted while watched
            yield _event("error", {"id": state["id"], "detail": f"job {state['id']} not found"})
            return
        key = tuple(fresh.get(k) for k in _WATCHED)
        if key != last_key:
            seq += 1
            state, last_key, last_sent = fresh, key, time.monotonic()
            yield _event("job", state, seq)
        elif time.monotonic() - last_sent >= KEEPALIVE_S:
            last_sent = time.monotonic()
            yield b": keepalive\n\n"
    yield _event("end", {"id": state["id"], "status": state["status"]})


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`event: job` (a JobOut) on every change; `event: end` when the job has "
                                    "finished; `event: reconnect` when the stream's lifetime is up"},
               404: {"model": ErrorOut, "description": "unknown id"}},
)
def job_events(job_id: str, request: Request, session: SessionDep, owner: OwnerDep,
               max_seconds: float = Query(MAX_STREAM_S, gt=0, le=MAX_STREAM_S,
                                          description="close the stream after this long; clients reconnect")
               ) -> StreamingResponse:
    """Server-sent events with the job's state whenever it changes, until it finishes."""
    job = get_owned_job(session, owner, job_id)
    first = JobOut.model_validate(job).model_dump(mode="json")
    # The request-scoped session would otherwise keep its connection for the whole stream.
    session.close()
    return StreamingResponse(
        _stream(request, owner, first, max_seconds), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
