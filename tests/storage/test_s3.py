"""The S3 blob store against a real S3 server (SeaweedFS, tests/s3server.py): content addressing, ranges,
sha256 checks on the way up and down, atomic puts, the checkpoint scratch, presigned downloads."""
from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from storage.blobs import BlobChecksumMismatch, BlobMissing
from storage.s3 import S3BlobStore


@pytest.fixture
def store(s3_server, s3_prefix, tmp_path) -> S3BlobStore:
    return _store(s3_server, s3_prefix, tmp_path)


def _store(server, prefix, tmp_path, **kw) -> S3BlobStore:
    return S3BlobStore(server.bucket, tmp_dir=tmp_path / "uploads", prefix=prefix, endpoint_url=server.endpoint_url,
                       region="us-east-1", access_key=server.access_key, secret_key=server.secret_key, **kw)


def _objects(server, prefix: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=server.bucket, Prefix=prefix).get("Contents", [])]


def test_put_is_content_addressed_get_range_delete(store, s3_server, s3_prefix, tmp_path):
    payload = os.urandom(300_000)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    key, size, got = store.put_file("alice", src, sha256=sha)
    assert (key, size, got) == (f"alice/{sha[:2]}/{sha}", len(payload), sha)
    assert store.put_file("alice", src)[0] == key and store.put_file("bob", src)[0] != key
    assert sorted(_objects(s3_server, s3_prefix)) == sorted([s3_prefix + key, f"{s3_prefix}bob/{sha[:2]}/{sha}"])

    fetched = store.fetch(key, tmp_path / "scratch")
    assert fetched.read_bytes() == payload and store.size(key) == len(payload) and store.exists(key)
    assert b"".join(store.open_range(key, 10, 99)) == payload[10:100]
    assert b"".join(store.open_range(key, len(payload) - 5)) == payload[-5:]
    assert store.local_file(key) is None and store.presigned_url(key, "x.bin") is None

    store.delete(key)
    assert not store.exists(key)
    for read in (lambda: store.open_range(key), lambda: store.fetch(key, tmp_path / "other"), lambda: store.size(key)):
        with pytest.raises(BlobMissing):
            read()
    store.delete(key)   # deleting twice is no error


def test_streamed_upload_commits_once_and_leaves_no_temp_files(store, s3_server, s3_prefix):
    pending = store.begin(max_bytes=1000)
    pending.write(b"weights" * 10)
    key = store.commit("alice", pending)
    assert key.endswith(hashlib.sha256(b"weights" * 10).hexdigest())
    assert b"".join(store.open_range(key)) == b"weights" * 10
    dropped = store.begin(max_bytes=1000)
    dropped.write(b"never stored")
    store.discard(dropped)
    assert list(store.tmp.iterdir()) == [] and _objects(s3_server, s3_prefix) == [s3_prefix + key]


def test_sha256_mismatches_are_refused_and_store_nothing(store, s3_server, s3_prefix, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"the real bytes")
    with pytest.raises(BlobChecksumMismatch):   # checked here, before any upload
        store.put_file("alice", src, sha256="0" * 64)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(BlobChecksumMismatch):   # checked by the server: the PUT carries the sha256
        store._upload(src, f"alice/{wrong[:2]}/{wrong}", wrong, src.stat().st_size)
    assert _objects(s3_server, s3_prefix) == []

    # an object whose bytes are not what its key says (tampered, or corrupted in the store) is never used
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{s3_prefix}alice/{wrong[:2]}/{wrong}", Body=b"evil")
    with pytest.raises(BlobChecksumMismatch):
        store.fetch(f"alice/{wrong[:2]}/{wrong}", tmp_path / "scratch")
    assert list((tmp_path / "scratch").iterdir()) == []


def test_multipart_upload_is_atomic(s3_server, s3_prefix, tmp_path):
    """Above the threshold a blob goes up in parts: complete, it reads back whole; a part that fails leaves
    no object and no unfinished upload in the bucket."""
    store = _store(s3_server, s3_prefix, tmp_path, multipart_threshold=5 * 1024**2)
    payload = os.urandom(11 * 1024**2)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    key, size, _ = store.put_file("alice", src)
    assert store.size(key) == size == len(payload)
    edge = 5 * 1024**2
    assert b"".join(store.open_range(key, edge - 3, edge + 2)) == payload[edge - 3:edge + 3]
    assert store.fetch(key, tmp_path / "scratch").read_bytes() == payload

    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(11 * 1024**2))
    real, calls = store.client.upload_part, []

    def flaky(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ConnectionError("the network went away")
        return real(**kwargs)

    store.client.upload_part = flaky
    with pytest.raises(ConnectionError):
        store.put_file("alice", other)
    assert 2 in calls
    assert _objects(s3_server, s3_prefix) == [s3_prefix + key]
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket, Prefix=s3_prefix)
    assert uploads.get("Uploads", []) == []


def test_checkpoint_scratch_is_saved_restored_elsewhere_and_dropped(store, s3_server, s3_prefix, tmp_path):
    """What one worker saves, another one (its own folder) restores: the resume after a crash."""
    mine = tmp_path / "worker-1"
    mine.mkdir()
    (mine / "stage-0-distill.safetensors").write_bytes(b"epoch 1")
    (mine / ".tmp-half").write_bytes(b"being written")   # never uploaded
    store.save_scratch("checkpoints/job_1", mine)
    (mine / "stage-0-distill.safetensors").write_bytes(b"epoch 2, longer")
    store.save_scratch("checkpoints/job_1", mine)
    theirs = store.restore_scratch("checkpoints/job_1", tmp_path / "worker-2")
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == {"stage-0-distill.safetensors": b"epoch 2, longer"}
    store.drop_scratch("checkpoints/job_1")
    assert list(store.restore_scratch("checkpoints/job_1", tmp_path / "worker-3").iterdir()) == []
    assert _objects(s3_server, s3_prefix) == []
    with pytest.raises(ValueError):
        store.restore_scratch("../escape", tmp_path / "x")


def test_presigned_download_url(s3_server, s3_prefix, tmp_path):
    store = _store(s3_server, s3_prefix, tmp_path, presign_s=60)
    src = tmp_path / "model.mpz"
    src.write_bytes(b"container bytes")
    key, _, _ = store.put_file("alice", src)
    resp = httpx.get(store.presigned_url(key, "model ä.mpz"))
    assert resp.status_code == 200 and resp.content == b"container bytes"
    assert "model%20%C3%A4.mpz" in resp.headers["content-disposition"]


def test_settings_say_what_the_s3_backend_needs_and_migrate_creates_the_bucket(s3_server, tmp_path):
    from pydantic import SecretStr

    from core.runtime import make_blob_store
    from core.settings import Settings

    with pytest.raises(ValueError, match="MODELPRESS_S3_BUCKET"):
        Settings(home=tmp_path, blob_backend="s3")
    with pytest.raises(ValueError, match="MODELPRESS_BLOB_BACKEND=s3"):
        Settings(home=tmp_path, s3_presign_downloads=60)
    settings = Settings(home=tmp_path, blob_backend="s3", s3_bucket="mp-fresh-bucket", s3_presign_downloads="off",
                        s3_endpoint_url=s3_server.endpoint_url, s3_region="us-east-1",
                        s3_access_key=SecretStr(s3_server.access_key), s3_secret_key=SecretStr(s3_server.secret_key))
    assert settings.s3_presign_downloads is None and s3_server.secret_key not in repr(settings)
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore) and store.tmp == tmp_path / "scratch" / "uploads"
    with pytest.raises(Exception):
        store.check()   # /readyz: storage is not ready without its bucket
    store.ensure_bucket()   # what `modelpress migrate` does
    store.ensure_bucket()
    store.check()
    s3_server.client().delete_bucket(Bucket="mp-fresh-bucket")
