"""Content-addressed blob storage behind a small interface.

Keys are ``<owner>/<sha256[:2]>/<sha256>``: identical bytes of one tenant are
stored once, and no blob is ever shared across tenants. Writes go to a temporary
file and are renamed into place only when complete, so a crash never leaves a
half blob under a real key.

Two stores: ``LocalBlobStore`` (a folder: the embedded default) and
``storage.s3.S3BlobStore`` (an S3-compatible bucket: the production store, which
API and workers on different hosts share). Nothing outside a store handles its
paths: the API streams uploads to a local temp file (``begin``/``commit``),
workers ``fetch`` what a job reads into their own scratch folder and ``put_file``
what it wrote, downloads are read with ``open_range`` (or served from
``local_file`` / a ``presigned_url`` where the store has one).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024


class BlobTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


class BlobMissing(LookupError):
    """The key names no stored bytes (deleted, or lost by the store)."""

    def __init__(self, key: str):
        super().__init__(f"the bytes of blob {key} are missing from the store")
        self.key = key


class BlobChecksumMismatch(ValueError):
    """Bytes whose sha256 is not the one expected (a corrupt transfer or a tampered object): never kept."""

    def __init__(self, what: str, expected: str, got: str):
        super().__init__(f"{what}: sha256 {got}, expected {expected}")
        self.expected, self.got = expected, got


class PendingBlob:
    """Bytes being written: hashed and counted on the way, not yet visible."""

    def __init__(self, tmp_path: Path, max_bytes: int):
        self.path = tmp_path
        self._file: BinaryIO = open(tmp_path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    @classmethod
    def in_dir(cls, tmp_dir: Path, max_bytes: int) -> PendingBlob:
        """A new pending blob in a fresh temp file under `tmp_dir` (every store stages uploads this way)."""
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        os.close(fd)
        return cls(Path(name), max_bytes)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise BlobTooLarge(self.max_bytes)
        self._hash.update(chunk)
        self._file.write(chunk)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class BlobStore(Protocol):
    def begin(self, max_bytes: int) -> PendingBlob: ...
    def commit(self, owner: str, pending: PendingBlob) -> str: ...
    def discard(self, pending: PendingBlob) -> None: ...
    def put_file(self, owner: str, path: Path, sha256: str | None = None) -> tuple[str, int, str]: ...
    def fetch(self, key: str, into: Path) -> Path: ...
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...
    def local_file(self, key: str) -> Path | None: ...
    def presigned_url(self, key: str, filename: str) -> str | None: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def restore_scratch(self, name: str, into: Path) -> Path: ...
    def save_scratch(self, name: str, folder: Path) -> None: ...
    def drop_scratch(self, name: str) -> None: ...
    def check(self) -> None: ...
    def sweep_tmp(self, older_than_s: float) -> int: ...


def blob_key(owner: str, sha256: str) -> str:
    return f"{owner}/{sha256[:2]}/{sha256}"


def key_sha256(key: str) -> str:
    """The sha256 a content-addressed key promises (its last segment)."""
    return key.rsplit("/", 1)[-1]


def file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_name(name: str, what: str = "blob key") -> str:
    """Keys and scratch names are relative, '/'-separated and never climb out ('..')."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{what} escapes the store: {name!r}")
    return name


def sweep_folder(folder: Path, older_than_s: float) -> int:
    """Remove temporary files left by crashed uploads."""
    removed = 0
    for p in folder.iterdir() if folder.is_dir() else ():
        if time.time() - p.stat().st_mtime > older_than_s:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


class LocalBlobStore:
    """A folder on this machine: the embedded default (API and workers share the folder)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def begin(self, max_bytes: int) -> PendingBlob:
        return PendingBlob.in_dir(self.tmp, max_bytes)

    def commit(self, owner: str, pending: PendingBlob) -> str:
        pending.close()
        key = blob_key(owner, pending.sha256)
        final = self.local_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            pending.path.unlink(missing_ok=True)  # same bytes already stored
        else:
            os.replace(pending.path, final)
        return key

    def discard(self, pending: PendingBlob) -> None:
        pending.close()
        pending.path.unlink(missing_ok=True)

    def put_file(self, owner: str, path: Path, sha256: str | None = None) -> tuple[str, int, str]:
        """Copy a finished local file in; returns (key, size, sha256). `sha256`: what the bytes must hash to."""
        pending = self.begin(max_bytes=2**63)
        try:
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    pending.write(chunk)
            if sha256 is not None and pending.sha256 != sha256:
                raise BlobChecksumMismatch(str(path), sha256, pending.sha256)
            return self.commit(owner, pending), pending.size, pending.sha256
        except BaseException:
            self.discard(pending)
            raise

    def local_path(self, key: str) -> Path:
        path = (self.root / check_name(key)).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def fetch(self, key: str, into: Path) -> Path:
        """The blob as a local file: here the stored file itself (read it, never write it)."""
        path = self.local_path(key)
        if not path.is_file():
            raise BlobMissing(key)
        return path

    def local_file(self, key: str) -> Path | None:
        path = self.local_path(key)
        return path if path.is_file() else None

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes start..end (inclusive); the file is opened now, so a missing blob raises before any byte."""
        path = self.local_path(key)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        return _read_span(f, start, end)

    def presigned_url(self, key: str, filename: str) -> str | None:
        return None

    def size(self, key: str) -> int:
        try:
            return self.local_path(key).stat().st_size
        except FileNotFoundError:
            raise BlobMissing(key) from None

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    def scratch_dir(self, name: str) -> Path:
        """A durable folder beside the blobs (training checkpoints), shared by every worker of the store."""
        path = (self.root / ".scratch" / check_name(name, "scratch name")).resolve()
        if (self.root / ".scratch").resolve() not in path.parents:
            raise ValueError(f"scratch name escapes the store: {name!r}")
        return path

    def restore_scratch(self, name: str, into: Path) -> Path:
        """The folder to work in: the shared durable folder itself (`into` is not needed)."""
        return self.scratch_dir(name)

    def save_scratch(self, name: str, folder: Path) -> None:
        """Nothing to do: the folder is already where every worker of the store finds it."""

    def drop_scratch(self, name: str) -> None:
        shutil.rmtree(self.scratch_dir(name), ignore_errors=True)

    def check(self) -> None:
        """Raise unless the store is writable (used by /readyz)."""
        with tempfile.NamedTemporaryFile(dir=self.tmp, prefix="ready-"):
            pass

    def sweep_tmp(self, older_than_s: float) -> int:
        """Remove temporary files left by crashed uploads."""
        return sweep_folder(self.tmp, older_than_s)


def _read_span(f: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with f:
        f.seek(start)
        left = None if end is None else end - start + 1
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
