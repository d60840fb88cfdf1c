"""Datasets are parsed in a checker process: same summary and errors as in-process, status codes kept, and
a dead checker is replaced without failing the upload."""
from __future__ import annotations

import asyncio
import os
import pickle

import numpy as np
import pytest

from api import dataset_checks
from compression.data.datasets import DatasetError, sniff_dataset
from compression.errors import ModelpressError

LIMIT = 8 * 1024**3


def test_errors_cross_processes_with_their_status():
    again = pickle.loads(pickle.dumps(DatasetError("too big", status_code=413)))
    assert type(again) is DatasetError and again.status_code == 413 and again.message == "too big"
    assert pickle.loads(pickle.dumps(ModelpressError("bad"))).status_code == 422


def test_the_checker_answers_as_the_parser_does_from_another_process(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.random.rand(16, 4).astype("float32"), labels=np.arange(16) % 3)
    assert asyncio.run(dataset_checks.check_dataset(path, LIMIT)) == sniff_dataset(path)
    pids = {p.pid for p in dataset_checks._checker_pool(LIMIT)._processes.values()}
    assert pids and os.getpid() not in pids
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError) as refused:
        asyncio.run(dataset_checks.check_dataset(bad, LIMIT))
    assert refused.value.status_code == 422


def test_a_dead_checker_is_replaced(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.zeros((4, 2), "float32"))
    asyncio.run(dataset_checks.check_dataset(path, LIMIT))
    pool = dataset_checks._checker_pool(LIMIT)
    for process in list(pool._processes.values()):
        process.kill()
        process.join()
    assert asyncio.run(dataset_checks.check_dataset(path, LIMIT))["samples"] == 4
    assert dataset_checks._checker_pool(LIMIT) is not pool
