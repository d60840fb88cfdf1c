"""The job's child process: limits enforced, cancellation kills the compute, crashes explained."""
from __future__ import annotations

import time

import pytest
import torch

from compression.job.runner import CompressionError, JobCancelled
from compression.job.sources import ModelSource
from workers.sandbox import SandboxError, inspect_in_child, run_job_in_child

INT8 = {"stages": [{"kind": "quantize", "dtype": "int8"}]}


class Greedy(torch.nn.Module):
    """Allocates far more than it should when run, as a hostile model might."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        waste = torch.ones(1024, 1024, 1024)  # 4 GiB
        return self.fc(x) + waste.sum()


def _script(module, path):
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def _run(path, out, **kw):
    defaults = dict(on_progress=lambda *a: None, is_cancelled=lambda: False,
                    memory_limit_bytes=3 * 2**30, time_limit_s=120)
    return run_job_in_child(ModelSource(path, "torchscript", {"input_shape": [2, 4]}), INT8, out, **{**defaults, **kw})


def test_a_normal_job_runs_and_reports_progress(tmp_path):
    seen = []
    out = _run(_script(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "m.ts"), tmp_path / "out",
               on_progress=lambda stage, f: seen.append(f))
    assert {a.kind for a in out.artifacts} >= {"container"}
    assert all(a.path.is_file() for a in out.artifacts)
    assert seen and seen == sorted(seen)


def test_memory_hungry_model_fails_with_a_reason(tmp_path):
    with pytest.raises(CompressionError, match="memory limit"):
        _run(_script(Greedy(), tmp_path / "greedy.ts"), tmp_path / "out")


def test_cancel_kills_the_child_mid_job(tmp_path):
    path = _script(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "m.ts")
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        _run(path, tmp_path / "out", is_cancelled=lambda: time.monotonic() - started > 0.3)
    assert time.monotonic() - started < 5


def test_time_limit(tmp_path):
    path = _script(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "m.ts")
    with pytest.raises(SandboxError, match="time limit"):
        _run(path, tmp_path / "out", time_limit_s=0.5)


def test_user_errors_pass_through_as_compression_errors(tmp_path):
    path = _script(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "m.ts")
    with pytest.raises(CompressionError, match="input_shape") as info:
        run_job_in_child(ModelSource(path, "torchscript"), INT8, tmp_path / "out", on_progress=lambda *a: None,
                         is_cancelled=lambda: False, memory_limit_bytes=3 * 2**30, time_limit_s=60)
    assert not isinstance(info.value, SandboxError)


def _inspect(path, options=None, **kw):
    source = ModelSource(path, "torchscript", {"input_shape": [2, 4]} if options is None else options)
    return inspect_in_child(source, **{"memory_limit_bytes": 3 * 2**30, "time_limit_s": 120, **kw})


def test_inspect_mode_loads_the_model_once_and_describes_it(tmp_path):
    found = _inspect(_script(torch.nn.Sequential(torch.nn.Linear(4, 3)), tmp_path / "m.ts"))
    assert found["summary"] is None
    assert found["inspection"]["layers_by_type"] == {"Linear": {"count": 1, "parameters": 15}}
    assert found["inspection"]["output_features"] == 3


def test_inspect_mode_keeps_the_job_limits(tmp_path):
    with pytest.raises(CompressionError, match="memory limit"):
        _inspect(_script(Greedy(), tmp_path / "greedy.ts"))
    with pytest.raises(SandboxError, match="time limit"):
        _inspect(_script(torch.nn.Sequential(torch.nn.Linear(4, 4)), tmp_path / "m.ts"), time_limit_s=0.5)
    with pytest.raises(CompressionError, match="input_shape") as info:
        _inspect(tmp_path / "m.ts", options={})
    assert not isinstance(info.value, SandboxError)


def test_the_memory_guard_applies_only_to_children_that_stay_on_the_cpu():
    """RLIMIT_AS would break CUDA's start (it reserves tens of GiB of address space): no GPU is needed to
    check the rule."""
    from workers.sandbox import address_space_limited

    assert address_space_limited("cpu", cuda_available=True)      # CUDA hidden from the child
    assert address_space_limited("cpu", cuda_available=False)
    assert address_space_limited("auto", cuda_available=False)
    assert not address_space_limited("auto", cuda_available=True)
    assert not address_space_limited("cuda", cuda_available=True)
