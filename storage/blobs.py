"""Content-addressed blob storage behind a small interface.

Keys are ``<owner>/<sha256[:2]>/<sha256>``: identical bytes of one tenant are
stored once, and no blob is ever shared across tenants. Writes go to a temporary
file and are renamed into place only when complete, so a crash never leaves a
half blob under a real key.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Protocol


class BlobTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"upload exceeds the limit of {limit} bytes")
        self.limit = limit


class PendingBlob:
    """Bytes being written: hashed and counted on the way, not yet visible."""

    def __init__(self, tmp_path: Path, max_bytes: int):
        self.path = tmp_path
        self._file: BinaryIO = open(tmp_path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

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
    def put_file(self, owner: str, path: Path) -> tuple[str, int, str]: ...
    def local_path(self, key: str) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def scratch_dir(self, name: str) -> Path: ...
    def drop_scratch(self, name: str) -> None: ...
    def check(self) -> None: ...


def blob_key(owner: str, sha256: str) -> str:
    return f"{owner}/{sha256[:2]}/{sha256}"


class LocalBlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def begin(self, max_bytes: int) -> PendingBlob:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        os.close(fd)
        return PendingBlob(Path(name), max_bytes)

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

    def put_file(self, owner: str, path: Path) -> tuple[str, int, str]:
        """Copy a finished local file in; returns (key, size, sha256)."""
        pending = self.begin(max_bytes=2**63)
        try:
            with open(path, "rb") as src:
                while chunk := src.read(1024 * 1024):
                    pending.write(chunk)
            return self.commit(owner, pending), pending.size, pending.sha256
        except BaseException:
            self.discard(pending)
            raise

    def local_path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)

    def scratch_dir(self, name: str) -> Path:
        """A durable folder beside the blobs (training checkpoints), shared by every worker of the store."""
        path = (self.root / ".scratch" / name).resolve()
        if (self.root / ".scratch").resolve() not in path.parents:
            raise ValueError(f"scratch name escapes the store: {name!r}")
        return path

    def drop_scratch(self, name: str) -> None:
        shutil.rmtree(self.scratch_dir(name), ignore_errors=True)

    def check(self) -> None:
        """Raise unless the store is writable (used by /readyz)."""
        with tempfile.NamedTemporaryFile(dir=self.tmp, prefix="ready-"):
            pass

    def sweep_tmp(self, older_than_s: float) -> int:
        """Remove temporary files left by crashed uploads."""
        removed = 0
        for p in self.tmp.iterdir():
            if time.time() - p.stat().st_mtime > older_than_s:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
