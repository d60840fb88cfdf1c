"""The client and the CLI against the real stack over real HTTP (uvicorn, PostgreSQL,
Redis, a real Celery worker)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import pytest
import torch

from mpclient import ApiError, Client
from tests.client.livestack import live_stack  # noqa: F401  (module-scoped fixture)
from tests.helpers import reload_container_and_check


def cli(stack, *argv, timeout=180) -> subprocess.CompletedProcess:
    env = {**stack.env, "MODELPRESS_URL": stack.url}
    return subprocess.run([sys.executable, "-m", "api.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_submit_wait_download_json(live_stack, lenet_file, tmp_path):
    out = tmp_path / "out"
    res = cli(live_stack, "submit", str(lenet_file), "--architecture", "lenet-300-100", "--recipe", "int8",
              "--wait", "--download", str(out), "--json")
    assert res.returncode == 0, (res.stdout, res.stderr, live_stack.worker_log.read_text()[-2000:])
    result = json.loads(res.stdout)
    assert result["model"]["format"] == "safetensors"
    job = result["job"]
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    with Client(live_stack.url) as c:
        arts = {a.name: a for a in c.artifacts(job["id"])}
    files = [p for p in out.iterdir()]
    assert sorted(p.name for p in files) == sorted(arts) and sorted(result["files"]) == sorted(map(str, files))
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == arts[p.name].sha256
    container = next(p for p in files if arts[p.name].kind == "container")
    reload_container_and_check(container)

    status = cli(live_stack, "status", job["id"], "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["metrics"]["output_mean_cosine"] > 0.99
    listed = cli(live_stack, "jobs", "--status", "succeeded", "--json")
    assert listed.returncode == 0 and job["id"] in [j["id"] for j in json.loads(listed.stdout)["items"]]
    plain = cli(live_stack, "jobs")
    assert plain.returncode == 0 and job["id"] in plain.stdout and "succeeded" in plain.stdout

    usage = cli(live_stack, "usage", "--json")
    assert usage.returncode == 0 and json.loads(usage.stdout)["artifacts"]["count"] >= len(arts)
    # delete: a model with jobs names the fix; the job, then the model, go
    refused = cli(live_stack, "delete", job["model_id"])
    assert refused.returncode == 3 and "cascade" in refused.stderr, refused.stderr
    assert cli(live_stack, "delete", job["id"]).returncode == 0
    assert cli(live_stack, "status", job["id"]).returncode == 3
    assert cli(live_stack, "delete", job["model_id"], "--json").returncode == 0
    assert cli(live_stack, "delete", "nonsense").returncode == 2


def test_cli_destroyed_model_is_never_a_quiet_success(live_stack, lenet_file, tmp_path):
    """The job runs (succeeded) but its verdict fails: exit 4, the verdict on stderr, the client flags it."""
    from tests.helpers import digits_npz

    pipeline = '{"stages": [{"kind": "prune", "sparsity": 0.98}]}'
    res = cli(live_stack, "submit", str(lenet_file), "--architecture", "lenet-300-100", "--pipeline", pipeline,
              "--calibration", str(digits_npz(tmp_path / "digits.npz", n=128)), "--wait", "--json")
    assert res.returncode == 4, (res.stdout, res.stderr, live_stack.worker_log.read_text()[-2000:])
    job = json.loads(res.stdout)["job"]
    quality = job["quality"]
    assert job["status"] == "succeeded" and quality["passed"] is False and quality["real_inputs"] is True
    assert quality["inputs"] == "the calibration dataset (128 samples)" and "NOT kept" in res.stderr
    assert cli(live_stack, "status", job["id"]).returncode == 4
    with Client(live_stack.url) as c:
        assert c.job(job["id"]).quality_passed is False


def test_cli_failing_job_exits_1(live_stack, tmp_path):
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4)).eval())
    path = tmp_path / "tiny.ts"
    torch.jit.save(scripted, str(path))
    # TorchScript layer names are known only once loaded, so this pattern fails in the worker, not at submit
    pipeline = '{"stages": [{"kind": "quantize", "dtype": "int8", "exclude": ["no_such_layer*"]}]}'
    res = cli(live_stack, "submit", str(path), "--options", '{"input_shape": [2, 8]}', "--pipeline", pipeline,
              "--wait", "--json")
    assert res.returncode == 1, (res.stdout, res.stderr)
    job = json.loads(res.stdout)["job"]
    assert job["status"] == "failed" and "no_such_layer" in job["error"]
    assert "no_such_layer" in res.stderr
    assert cli(live_stack, "status", job["id"]).returncode == 1
    # an unknown recipe is an API error (422), exit 3, with the server's message
    bad = cli(live_stack, "submit", json.loads(res.stdout)["model"]["id"], "--recipe", "nope")
    assert bad.returncode == 3 and "unknown recipe" in bad.stderr


def test_client_upload_submit_wait_download(live_stack, lenet_file, tmp_path):
    seen: list[tuple[int, int]] = []
    updates = []
    with Client(live_stack.url) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100", progress=lambda d, t: seen.append((d, t)))
        assert model.id.startswith("mdl_") and model.summary["parameters"] == 266610
        size = lenet_file.stat().st_size
        assert seen[-1] == (size, size) and len(seen) > 2  # streamed in chunks

        job = c.submit(model.id, recipe="fp16", idempotency_key="e2e-1")
        assert c.submit(model.id, recipe="fp16", idempotency_key="e2e-1").id == job.id
        done = c.wait(job.id, timeout=120, on_progress=updates.append)
        assert done.status == "succeeded" and done.finished_at is not None
        assert updates[-1].status == "succeeded" and len(updates) >= 2

        m = c.metrics(job.id)
        assert m.metrics["size_bytes_after"] < m.metrics["size_bytes_before"]
        arts = c.artifacts(job.id)
        container = next(a for a in arts if a.kind == "container")
        [path] = c.download(container.id, tmp_path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == container.sha256
        assert not list(tmp_path.glob("*.part"))

        assert job.id in [j.id for j in c.jobs(status="succeeded", limit=500).items]
        with pytest.raises(ApiError) as err:
            c.cancel(job.id)
        assert err.value.status == 409
        with pytest.raises(ApiError) as err:
            c.job("job_doesnotexist")
        assert err.value.status == 404 and "not found" in err.value.message


def test_events_stream_and_cancel(live_stack, lenet_file):
    with Client(live_stack.url) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        # No worker listens on the gpu queue: the job stays queued.
        job = c.submit(model.id, recipe="int8", device="gpu")
        events = list(c.events(job.id, max_seconds=1.2))
        assert [n for n, _ in events] == ["job", "reconnect"]
        assert events[0][1]["status"] == "queued"

        r = httpx.get(f"{live_stack.url}/v1/jobs/job_nope/events")
        assert r.status_code == 404

    res = cli(live_stack, "cancel", job.id, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "cancelled"
    with Client(live_stack.url) as c:
        events = list(c.events(job.id))
        assert [n for n, _ in events] == ["job", "end"] and events[-1][1]["status"] == "cancelled"
        assert c.wait(job.id, timeout=5).status == "cancelled"
    assert cli(live_stack, "status", job.id).returncode == 1


def test_cli_goal_job_on_the_real_stack(live_stack, lenet_file, tmp_path):
    """A goal instead of a recipe, through the CLI, the API, Redis and a Celery worker on PostgreSQL."""
    from tests.helpers import digits_npz

    data = str(digits_npz(tmp_path / "digits.npz", n=128, labels=False))
    res = cli(live_stack, "submit", str(lenet_file), "--architecture", "lenet-300-100", "--goal", "ratio=6",
              "--min-cosine", "0.9", "--calibration", data, "--wait", "--json", timeout=300)
    assert res.returncode == 0, (res.stdout, res.stderr, live_stack.worker_log.read_text()[-3000:])
    result = json.loads(res.stdout)
    goal = result["goal"]
    assert result["job"]["status"] == "succeeded" and goal["goal_met"] is True, goal["summary"]
    assert result["job"]["pipeline"] == {"goal": {"target": {"ratio": 6.0}, "constraint": {"metric": "cosine", "min": 0.9},
                                                   "budget_minutes": 15.0, "seed": 0}}
    assert goal["reported_on"].endswith("held back from the search)")
    # an unreachable goal still succeeds with the closest candidate, and exits 4
    res = cli(live_stack, "submit", result["job"]["model_id"], "--goal", "ratio=200", "--min-cosine", "0.999",
              "--methods", "quantize", "--calibration", result["datasets"]["calibration"]["id"] if "datasets" in result else data,
              "--wait", "--json", timeout=300)
    assert res.returncode == 4, (res.stdout, res.stderr)
    missed = json.loads(res.stdout)
    assert missed["job"]["status"] == "succeeded" and missed["goal"]["summary"].startswith("goal missed")
    assert missed["job"]["pipeline"]["goal"]["methods"] == ["quantize"]
    assert {c["name"] for c in missed["goal"]["candidates"] if not c["name"].startswith("allocated")} == {"fp16", "int8"}
    with Client(live_stack.url) as c:
        assert [a for a in c.artifacts(missed["job"]["id"]) if a.kind == "container"]


def test_cli_analyze_job_on_the_real_stack(live_stack, lenet_file, tmp_path):
    """Per-layer sensitivity alone: which layer breaks, before choosing a recipe; no compressed model."""
    from tests.helpers import digits_npz

    data = str(digits_npz(tmp_path / "digits.npz", n=96))
    res = cli(live_stack, "submit", str(lenet_file), "--architecture", "lenet-300-100", "--analyze", "--eval", data,
              "--wait", "--json", timeout=300)
    assert res.returncode == 0, (res.stdout, res.stderr, live_stack.worker_log.read_text()[-3000:])
    result = json.loads(res.stdout)
    layers = result["sensitivity"]["layers"]
    assert [r["tensor"] for r in layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(set(r["loss"]) == {"int8", "int4", "int3"} for r in layers)
    assert result["analyze"]["metric"] == "top1" and result["analyze"]["data"] == "eval"
    assert "3 layers measured on 96 samples" in result["analyze"]["summary"]
    with Client(live_stack.url) as c:
        job_id = result["job"]["id"]
        assert [a.kind for a in c.artifacts(job_id)] == ["report"]   # measured, nothing compressed
        resp = httpx.get(f"{live_stack.url}/v1/jobs/{job_id}/sensitivity").json()
        assert resp["sensitivity"]["layers"] == layers
