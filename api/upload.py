"""Streaming multipart upload: the file part goes straight to the blob store in
chunks (hashed and size-checked on the way), never whole into memory."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header

from storage.blobs import BlobStore, BlobTooLarge, PendingBlob

MAX_FIELD_BYTES = 64 * 1024
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass
class ParsedUpload:
    blob: PendingBlob | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


async def receive_upload(request: Request, store: BlobStore, file_field: str, max_bytes: int,
                         too_large: str | None = None, chunk_bytes: int = 1024 * 1024) -> ParsedUpload:
    """Parse a multipart body; the caller must commit or discard ``result.blob``.

    ``too_large`` is the 413 message (default: the size limit)."""
    too_large = too_large or f"upload exceeds the limit of {max_bytes} bytes"
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(415, f"send the model as multipart/form-data with a {file_field!r} file field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise HTTPException(413, too_large)

    result = ParsedUpload()
    state: dict = {"headers": {}, "field": None, "name": None, "buf": bytearray(), "error": None}

    def on_header_field(data, start, end):
        state["hname"] = bytes(data[start:end]).lower()

    def on_header_value(data, start, end):
        state["headers"][state["hname"]] = state["headers"].get(state["hname"], b"") + bytes(data[start:end])

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if b"filename" in disp and name == file_field:
            if result.blob is not None:
                raise HTTPException(422, f"send exactly one {file_field!r} file")
            result.filename = _checked_filename(disp[b"filename"].decode("utf-8", "replace"))[:255] or "upload"
            result.blob = store.begin(max_bytes)
            state["field"] = "file"
        else:
            state["field"] = "text"
            state["buf"] = bytearray()

    def on_part_data(data, start, end):
        if state["field"] == "file":
            result.blob.write(bytes(data[start:end]))
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > MAX_FIELD_BYTES:
                raise HTTPException(413, f"form field {state['name']!r} is too large")

    def on_part_end():
        if state["field"] == "text":
            result.fields[state["name"]] = state["buf"].decode("utf-8", "replace")
        state["headers"] = {}
        state["field"] = None

    parser = MultipartParser(params[b"boundary"], callbacks=dict(
        on_header_field=on_header_field, on_header_value=on_header_value,
        on_headers_finished=on_headers_finished, on_part_data=on_part_data, on_part_end=on_part_end,
    ))
    try:
        # Parsing, hashing and writing happen in a worker thread, a batch of
        # about chunk_bytes at a time, so concurrent uploads never stall the
        # event loop that answers every other request.
        batch = bytearray()
        async for chunk in request.stream():
            batch += chunk
            if len(batch) >= chunk_bytes:
                await run_in_threadpool(parser.write, bytes(batch))
                batch.clear()
        await run_in_threadpool(parser.write, bytes(batch))
        parser.finalize()
    except BlobTooLarge:
        _discard(store, result)
        raise HTTPException(413, too_large) from None
    except HTTPException:
        _discard(store, result)
        raise
    except Exception as exc:  # malformed multipart, client disconnect, ...
        _discard(store, result)
        raise HTTPException(400, f"could not read the multipart body: {exc}") from None
    if result.blob is None:
        raise HTTPException(422, f"missing the {file_field!r} file field")
    result.blob.close()
    if result.blob.size == 0:
        _discard(store, result)
        raise HTTPException(422, "the uploaded file is empty")
    return result


def _checked_filename(name: str) -> str:
    """Any script is welcome; control characters (terminal escapes in CLI listings), bidirectional overrides
    (a name that reads as another extension) and path separators (a name is never a path) are refused."""
    bad = next((c for c in name if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS or c in "/\\"), None)
    if bad is not None:
        what = "path separators" if bad in "/\\" else "control or bidirectional-override characters"
        raise HTTPException(422, f"the file name may not contain {what} (found {bad!r}); rename the file")
    return name


def _discard(store: BlobStore, result: ParsedUpload) -> None:
    if result.blob is not None:
        store.discard(result.blob)
        result.blob = None
