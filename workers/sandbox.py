"""Run one compression job, or one inspection of an upload, in a child process under resource limits.

Uploaded models are hostile until proven otherwise: loading and compressing
happen in a separate interpreter with an address-space limit, so a model that
explodes in memory or hangs takes down only that child. Cancelling kills the
child, which really stops the compute (not just at the next stage boundary).

Protocol: the parent writes one JSON request to the child's stdin ("mode": "job" or "inspect"; "model"
and, for jobs, "teacher": compression.job.sources.ModelSource as JSON, built by the worker from database
rows; "pipeline", "datasets", "out_dir", "checkpoint_dir"); the child writes JSON lines to stdout: {"progress": [stage, fraction]} and {"log": {epoch record}} ... then
{"result": {...}} or {"error": {"kind": ..., "message": ...}}. Every path in it is on the worker's own host
(its scratch folder, or the local blob folder of the embedded default): the worker fetched the files there.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

from compression.job.runner import ArtifactFile, CompressionError, JobCancelled, JobOutput
from compression.job.sources import ModelSource
from core.procs import die_with_parent


class SandboxError(CompressionError):
    """The child died or broke a limit; the message says which, in plain words."""


# The child runs at a lower priority: on a shared host compute yields the CPU to the API and to the worker's
# own heartbeat (it only matters under contention).
CHILD_NICE = 10
Device = Literal["cpu", "auto", "cuda"]


def address_space_limited(device: Device, cuda_available: bool) -> bool:
    """Whether the memory guard (RLIMIT_AS) applies: only to a child that stays on the CPU. CUDA reserves
    tens of GiB of virtual address space when it starts, so under the limit a GPU job would fail at its first
    CUDA call; such a job is bounded by the time limit and the host's or container's memory limit instead.
    "cpu": CUDA is hidden from the child; "auto": CUDA where the machine has it; "cuda": always the GPU."""
    return device == "cpu" or (device == "auto" and not cuda_available)


@lru_cache(maxsize=1)
def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_job_in_child(
    model: ModelSource, pipeline: dict, out_dir: Path, *,
    on_progress: Callable[[str | None, float], None], is_cancelled: Callable[[], bool],
    memory_limit_bytes: int, time_limit_s: float,
    datasets: dict[str, tuple[Path, str]] | None = None, checkpoint_dir: Path | None = None,
    on_log: Callable[[dict], None] = lambda record: None, teacher: ModelSource | None = None,
    device: Device = "auto",
) -> JobOutput:
    """`model` / `teacher`: resolved by the worker from rows the job's tenant owns; `datasets`: {role: (path,
    format)}; `checkpoint_dir`: kept across attempts so a rerun resumes; `device`: see address_space_limited."""
    request = {"mode": "job", "model": model.to_json(), "teacher": teacher.to_json() if teacher else None,
               "pipeline": pipeline, "out_dir": str(out_dir),
               "datasets": {role: [str(path), fmt] for role, (path, fmt) in (datasets or {}).items()},
               "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None}
    result = _run_in_child(request, on_progress=on_progress, on_log=on_log, is_cancelled=is_cancelled,
                           memory_limit_bytes=memory_limit_bytes, time_limit_s=time_limit_s, device=device)
    return JobOutput(artifacts=[ArtifactFile(a["name"], a["kind"], Path(a["path"])) for a in result["artifacts"]],
                     metrics=result["metrics"])


def inspect_in_child(model: ModelSource, *, memory_limit_bytes: int, time_limit_s: float) -> dict:
    """Load the upload once under the job limits: {"inspection": {...}, "summary": {...} | None}
    (compression.formats.inspect.inspect_upload). Raises CompressionError with the reason it cannot be loaded."""
    request = {"mode": "inspect", "model": model.to_json()}
    return _run_in_child(request, on_progress=lambda *a: None, on_log=lambda record: None, is_cancelled=lambda: False,
                         memory_limit_bytes=memory_limit_bytes, time_limit_s=time_limit_s, device="cpu")


def _spawn(memory_limit_bytes: int, device: Device) -> subprocess.Popen:
    guarded = address_space_limited(device, device != "cpu" and _cuda_available())

    def limit_resources() -> None:
        die_with_parent(signal.SIGKILL)  # a killed worker takes its job's compute with it
        os.nice(CHILD_NICE)
        if guarded:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return subprocess.Popen(
        [sys.executable, "-m", "workers.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=limit_resources, start_new_session=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else None,
    )


def _run_in_child(request: dict, *, on_progress, on_log, is_cancelled, memory_limit_bytes: int,
                  time_limit_s: float, device: Device = "auto") -> dict:
    child = _spawn(memory_limit_bytes, device)
    child.stdin.write(json.dumps(request).encode())
    child.stdin.close()
    deadline = time.monotonic() + time_limit_s
    outcome: dict | None = None
    selector = selectors.DefaultSelector()
    selector.register(child.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while outcome is None:
            if is_cancelled():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise SandboxError(f"time limit of {time_limit_s:.0f} s exceeded")
            if not selector.select(timeout=0.2):
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if "progress" in message:
                    on_progress(*message["progress"])
                elif "log" in message:
                    on_log(message["log"])
                else:
                    outcome = message
    finally:
        selector.close()
        if outcome is None:
            _kill(child)
        child.wait()
        stderr = child.stderr.read().decode("utf-8", "replace")
        child.stderr.close()
        child.stdout.close()
    if outcome is None:
        raise SandboxError(_death_reason(child.returncode, stderr, memory_limit_bytes))
    if "error" in outcome:
        err = outcome["error"]
        if err["kind"] == "cancelled":
            raise JobCancelled()
        raise (CompressionError if err["kind"] == "user" else SandboxError)(err["message"])
    return outcome["result"]


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _death_reason(code: int, stderr: str, memory_limit_bytes: int) -> str:
    tail = stderr.strip().splitlines()[-1:] or [""]
    if "MemoryError" in stderr or "std::bad_alloc" in stderr or "DefaultCPUAllocator: can't allocate" in stderr:
        return f"the model needed more than the memory limit of {memory_limit_bytes / 2**30:.1f} GiB"
    if code is not None and code < 0:
        return f"the job process was killed by signal {signal.Signals(-code).name}"
    return f"the job process exited with code {code}: {tail[0][:300]}"


def _child_main() -> None:
    # Only our protocol goes to stdout; anything a library prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    from compression.errors import ModelpressError

    request = json.loads(sys.stdin.read())
    try:
        result = (_inspect if request.get("mode") == "inspect" else _job)(request, send)
    except JobCancelled:
        send({"error": {"kind": "cancelled", "message": "cancelled"}})
    except ModelpressError as exc:   # every user-fixable error: format, dataset, container, job
        send({"error": {"kind": "user", "message": getattr(exc, "message", None) or str(exc)}})
    except MemoryError:
        send({"error": {"kind": "limit", "message": "the model needed more than the job's memory limit"}})
    except Exception as exc:
        if "can't allocate memory" in str(exc):  # torch's allocator under RLIMIT_AS
            send({"error": {"kind": "limit", "message": "the model needed more than the job's memory limit"}})
            return
        send({"error": {"kind": "internal", "message": f"internal error: {type(exc).__name__}: {exc}"[:2000]}})
    else:
        send({"result": result})


def _job(request: dict, send) -> dict:
    from compression.job.runner import JobHooks, run_compression_job
    from compression.pipeline import parse_pipeline

    model = ModelSource.from_json(request["model"])
    if "goal" in request["pipeline"]:   # a goal instead of a recipe: the search picks the pipeline
        return _outcome(_goal_job(request, model, send))
    if "analyze" in request["pipeline"]:   # per-layer sensitivity only, no compressed model
        return _outcome(_analyze_job(request, model, send))
    output = run_compression_job(
        model.path, model.format, model.options, parse_pipeline(request["pipeline"]), Path(request["out_dir"]),
        JobHooks(on_progress=lambda stage, fraction: send({"progress": [stage, fraction]}),
                 on_log=lambda record: send({"log": record})),
        dataset_files={role: (Path(path), fmt) for role, (path, fmt) in request.get("datasets", {}).items()},
        checkpoint_dir=Path(request["checkpoint_dir"]) if request.get("checkpoint_dir") else None,
        sample_inputs=model.sample_inputs, teacher=ModelSource.from_json(request.get("teacher")),
    )
    return _outcome(output)


def _outcome(output: JobOutput) -> dict:
    return {"metrics": output.metrics, "artifacts": [
        {"name": a.name, "kind": a.kind, "path": str(a.path)} for a in output.artifacts]}


def _goal_job(request: dict, model: ModelSource, send) -> JobOutput:
    from compression.job.goal_runner import run_goal_job
    from compression.job.runner import JobHooks
    from compression.search.goal import GoalSpec

    return run_goal_job(
        model.path, model.format, model.options, GoalSpec.model_validate(request["pipeline"]["goal"]),
        Path(request["out_dir"]),
        JobHooks(on_progress=lambda stage, fraction: send({"progress": [stage, fraction]}),
                 on_log=lambda record: send({"log": record})),
        dataset_files={role: (Path(path), fmt) for role, (path, fmt) in request.get("datasets", {}).items()},
        sample_inputs=model.sample_inputs)


def _analyze_job(request: dict, model: ModelSource, send) -> JobOutput:
    from compression.job.analyze_runner import AnalyzeSpec, run_analyze_job
    from compression.job.runner import JobHooks

    return run_analyze_job(
        model.path, model.format, model.options, AnalyzeSpec.model_validate(request["pipeline"]["analyze"]),
        Path(request["out_dir"]), JobHooks(on_progress=lambda stage, fraction: send({"progress": [stage, fraction]})),
        dataset_files={role: (Path(path), fmt) for role, (path, fmt) in request.get("datasets", {}).items()},
        sample_inputs=model.sample_inputs)


def _inspect(request: dict, send) -> dict:
    from compression.formats.inspect import inspect_upload

    model = ModelSource.from_json(request["model"])
    return inspect_upload(model.path, model.format, model.options, sample_inputs=model.sample_inputs)


if __name__ == "__main__":
    _child_main()
