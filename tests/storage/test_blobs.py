from __future__ import annotations

import hashlib

import pytest

from storage.blobs import BlobTooLarge, LocalBlobStore


def test_put_is_content_addressed_per_owner_and_deduplicated(tmp_path):
    store = LocalBlobStore(tmp_path)
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    key1, size, sha = store.put_file("alice", src)
    key2, _, _ = store.put_file("alice", src)
    key3, _, _ = store.put_file("bob", src)
    assert key1 == key2 != key3
    assert sha == hashlib.sha256(b"abc" * 1000).hexdigest() and size == 3000
    assert store.local_path(key1).read_bytes() == b"abc" * 1000
    assert list(store.tmp.iterdir()) == []


def test_oversize_write_leaves_nothing(tmp_path):
    store = LocalBlobStore(tmp_path)
    pending = store.begin(max_bytes=10)
    pending.write(b"x" * 10)
    with pytest.raises(BlobTooLarge):
        pending.write(b"x")
    store.discard(pending)
    assert list(store.tmp.iterdir()) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_keys_cannot_escape_the_store(tmp_path):
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path / "store").local_path("../../etc/passwd")


def test_sweep_removes_only_old_temp_files(tmp_path):
    import os
    import time

    store = LocalBlobStore(tmp_path)
    old, new = store.begin(10), store.begin(10)
    old.close(), new.close()
    os.utime(old.path, (time.time() - 7200, time.time() - 7200))
    assert store.sweep_tmp(older_than_s=3600) == 1
    assert not old.path.exists() and new.path.exists()
