"""The production blob store: one bucket of an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph, R2).

The API and workers on other hosts share it and nothing else but the database and the broker. Objects are
``<prefix><blob key>`` (the same content-addressed keys as the local folder) and
``<prefix>.scratch/<name>/<file>`` (training checkpoints a job on another worker resumes from).

Atomic like the folder: an object is visible only once its upload completed. A blob up to
`multipart_threshold` is one PUT carrying its sha256, which the server checks (a corrupt transfer is
refused, nothing stored); above it, a multipart upload whose parts the server checks one by one and which
the transfer manager aborts on any failure. Downloads to a worker are hashed on the way and refused
unless they match the key's sha256.

Client: boto3 rather than obstore. Its transfer manager does multipart uploads (parallel parts, retries,
abort on failure), it presigns URLs, sends the checksums servers verify, and is the client every
S3-compatible server is tested against; obstore (Rust, still 0.x) is faster per call, but a job moves
a few large files, where the per-call overhead does not count.
"""
from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from storage.blobs import (CHUNK, BlobChecksumMismatch, BlobMissing, PendingBlob, blob_key, check_name,
                           file_sha256, key_sha256, sweep_folder)

_MISSING = {"404", "NoSuchKey", "NotFound"}
_BAD_DIGEST = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch"}


class S3BlobStore:
    def __init__(self, bucket: str, *, tmp_dir: Path, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, access_key: str | None = None, secret_key: str | None = None,
                 presign_s: int | None = None, presign_endpoint_url: str | None = None,
                 multipart_threshold: int = 64 * 1024**2):
        """`tmp_dir`: this host's folder for uploads on their way in; `presign_s`: downloads redirect to a URL
        valid that long (None: the API streams them); `presign_endpoint_url`: the endpoint clients reach,
        when it differs from the one this host uses (no credentials: boto3's default chain)."""
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix, self.region = bucket, prefix, region
        self.tmp = Path(tmp_dir)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.presign_s, self.multipart_threshold = presign_s, multipart_threshold
        # path-style: S3-compatible servers on a plain host name have no per-bucket DNS names
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=120,
                        s3={"addressing_style": "path"} if endpoint_url else {})
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                        region_name=region)
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        # signing is local arithmetic: a client on the public endpoint never connects from here
        self._signer = session.client("s3", endpoint_url=presign_endpoint_url, config=config) \
            if presign_endpoint_url else self.client
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                       multipart_chunksize=max(multipart_threshold, 5 * 1024**2), max_concurrency=4)
        self._saved: dict[str, tuple[int, int]] = {}   # scratch object -> (size, mtime) of the file uploaded

    # -- blobs ---------------------------------------------------------------------------------------

    def begin(self, max_bytes: int) -> PendingBlob:
        return PendingBlob.in_dir(self.tmp, max_bytes)

    def commit(self, owner: str, pending: PendingBlob) -> str:
        pending.close()
        key = blob_key(owner, pending.sha256)
        try:
            if not self.exists(key):   # same bytes already stored
                self._upload(pending.path, key, pending.sha256, pending.size)
        finally:
            pending.path.unlink(missing_ok=True)
        return key

    def discard(self, pending: PendingBlob) -> None:
        pending.close()
        pending.path.unlink(missing_ok=True)

    def put_file(self, owner: str, path: Path, sha256: str | None = None) -> tuple[str, int, str]:
        """Upload a finished local file; returns (key, size, sha256). `sha256`: what the bytes must hash to."""
        got, size = file_sha256(path)
        if sha256 is not None and got != sha256:
            raise BlobChecksumMismatch(str(path), sha256, got)
        key = blob_key(owner, got)
        if not self.exists(key):
            self._upload(Path(path), key, got, size)
        return key, size, got

    def _upload(self, path: Path, key: str, sha256: str, size: int) -> None:
        name, meta = self._name(key), {"sha256": sha256}
        try:
            if size < self.multipart_threshold:
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=body, Metadata=meta,
                                           ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode())
            else:
                self.client.upload_file(str(path), self.bucket, name, Config=self.transfer,
                                        ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": meta})
        except Exception as exc:
            if _code(exc) in _BAD_DIGEST:
                raise BlobChecksumMismatch(f"upload of {key}", sha256, "something else (refused by the store)") \
                    from None
            raise

    def fetch(self, key: str, into: Path) -> Path:
        """Download to `into`/<sha256>, hashed on the way: bytes that do not match the key are never kept."""
        into.mkdir(parents=True, exist_ok=True)
        dest = into / key_sha256(key)
        if dest.is_file():   # fetched and checked before (a dataset two roles share)
            return dest
        fd, tmp = tempfile.mkstemp(dir=into, prefix=".part-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                for chunk in self.open_range(key):
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != key_sha256(key):
                raise BlobChecksumMismatch(f"download of {key}", key_sha256(key), digest.hexdigest())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes start..end (inclusive); the request is made now, so a missing blob raises before any byte."""
        extra = {"Range": f"bytes={start}-{'' if end is None else end}"} if start or end is not None else {}
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._name(key), **extra)["Body"]
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise BlobMissing(key) from None
            raise
        return _stream(body)

    def local_file(self, key: str) -> Path | None:
        return None

    def presigned_url(self, key: str, filename: str) -> str | None:
        if self.presign_s is None:
            return None
        return self._signer.generate_presigned_url("get_object", ExpiresIn=self.presign_s, Params={
            "Bucket": self.bucket, "Key": self._name(key), "ResponseContentType": "application/octet-stream",
            "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}"})

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._name(key))["ContentLength"])
        except Exception as exc:
            if _code(exc) in _MISSING:
                raise BlobMissing(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobMissing:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def _name(self, key: str) -> str:
        return self.prefix + check_name(key)

    # -- durable scratch (training checkpoints) --------------------------------------------------------

    def _scratch(self, name: str) -> str:
        return f"{self.prefix}.scratch/{check_name(name, 'scratch name')}/"

    def restore_scratch(self, name: str, into: Path) -> Path:
        """Download what an earlier attempt saved under `name` into `into`: the folder to work in."""
        into.mkdir(parents=True, exist_ok=True)
        for obj in self._list(self._scratch(name)):
            file = into / check_name(obj["Key"].rsplit("/", 1)[1], "scratch file")
            self.client.download_file(self.bucket, obj["Key"], str(file), Config=self.transfer)
            stat = file.stat()
            self._saved[obj["Key"]] = (stat.st_size, stat.st_mtime_ns)
        return into

    def save_scratch(self, name: str, folder: Path) -> None:
        """Upload the folder's files that changed since the last save; names starting with '.' are still
        being written. Each file is opened first, so a replace meanwhile still uploads a whole file."""
        for file in sorted(folder.iterdir()) if folder.is_dir() else ():
            if file.name.startswith(".") or not file.is_file():
                continue
            target = self._scratch(name) + file.name
            with open(file, "rb") as body:
                stat = os.fstat(body.fileno())
                if self._saved.get(target) == (stat.st_size, stat.st_mtime_ns):
                    continue
                self.client.upload_fileobj(body, self.bucket, target, Config=self.transfer)
            self._saved[target] = (stat.st_size, stat.st_mtime_ns)

    def drop_scratch(self, name: str) -> None:
        prefix = self._scratch(name)
        keys = [obj["Key"] for obj in self._list(prefix)]
        for i in range(0, len(keys), 1000):   # the most one request deletes
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
        for target in [t for t in self._saved if t.startswith(prefix)]:
            self._saved.pop(target, None)

    def _list(self, prefix: str) -> Iterator[dict]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    # -- operations ------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise unless the bucket answers (used by /readyz)."""
        self.client.head_bucket(Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (`modelpress migrate`)."""
        try:
            self.check()
        except Exception as exc:
            if _code(exc) not in _MISSING | {"NoSuchBucket"}:
                raise
            where = {"CreateBucketConfiguration": {"LocationConstraint": self.region}} \
                if self.region and self.region != "us-east-1" else {}
            self.client.create_bucket(Bucket=self.bucket, **where)

    def sweep_tmp(self, older_than_s: float) -> int:
        """Uploads that died on their way in, on this host. (Multipart uploads a crashed process left in the
        bucket are the bucket's lifecycle rule's job: AbortIncompleteMultipartUpload.)"""
        return sweep_folder(self.tmp, older_than_s)


def _stream(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
