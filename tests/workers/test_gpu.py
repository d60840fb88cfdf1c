"""On a GPU host: the sandbox's memory guard stays off for jobs that may use CUDA (its start-up reserves far
more address space than the guard allows), the job measures on the GPU, and a cpu-queue job keeps CUDA hidden.
Skipped, loudly, where there is no CUDA device (see tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

from compression.job.sources import ModelSource
from workers.sandbox import run_job_in_child

pytestmark = pytest.mark.gpu
INT8 = {"stages": [{"kind": "quantize", "dtype": "int8"}]}


def _job(tmp_path, device: str):
    path = tmp_path / f"m-{device}.ts"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(64, 64)).eval()), str(path))
    return run_job_in_child(ModelSource(path, "torchscript", {"input_shape": [2, 64]}), INT8, tmp_path / device,
                            on_progress=lambda *a: None, is_cancelled=lambda: False,
                            memory_limit_bytes=2 * 2**30, time_limit_s=300, device=device)


def test_a_job_that_may_use_cuda_runs_without_the_address_space_guard(tmp_path):
    metrics = _job(tmp_path, "auto").metrics
    assert metrics["latency"]["cuda"]["device"] == torch.cuda.get_device_name(0)


def test_a_cpu_queue_job_on_a_gpu_host_stays_on_the_cpu(tmp_path):
    assert "cuda" not in _job(tmp_path, "cpu").metrics["latency"]
