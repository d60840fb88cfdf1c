"""Uploaded datasets are parsed and validated in a child process, never in the API's own.

Parsing up to MODELPRESS_MAX_DATASET_BYTES (CSV, JSONL, Parquet, npz) in a thread would hold the interpreter
lock for seconds, and every status poll this process answers would wait behind it; in a child it costs the
API nothing but a pipe. The child also runs under an address-space limit, so a hostile file that inflates
when parsed fails alone with a clear 413 instead of taking the API's memory. One pool per API process,
started on the first upload (a spawned interpreter, so no state of the server is inherited).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from compression.data.datasets import DatasetError, sniff_dataset

CHECKERS = 2   # concurrent dataset checks per API process; more uploads wait their turn

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _limit_address_space(limit_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _checker_pool(limit_bytes: int) -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(CHECKERS, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_limit_address_space, initargs=(limit_bytes,))
        return _pool


def _drop_pool(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


async def check_dataset(path: Path, memory_limit_bytes: int) -> dict:
    """sniff_dataset(path) in a checker process: the summary, or DatasetError (4xx) saying what is wrong.
    A checker that died before this call (killed while idle) is replaced and the check runs once more."""
    for attempt in range(2):
        pool = _checker_pool(memory_limit_bytes)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, sniff_dataset, str(path))
        except MemoryError:
            break
        except BrokenProcessPool:   # its memory ran out in C code, or the OS killed it
            _drop_pool(pool)
    raise DatasetError(f"parsing the dataset needs more than {memory_limit_bytes} bytes of memory "
                       "(MODELPRESS_JOB_MEMORY_LIMIT_BYTES); send it in smaller files", status_code=413)

