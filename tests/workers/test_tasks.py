"""The worker's job task: what it passes to the sandbox and what a failure midway leaves behind."""
from __future__ import annotations

import pytest

from storage import jobs as job_state
from storage.models import Artifact, Model
from tests.helpers import make_lenet_safetensors, upload


def _claimed(client, tmp_path, body: dict):
    model = upload(client, make_lenet_safetensors(tmp_path / "lenet.safetensors")).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], **body})
    assert job.status_code == 201, job.text
    rt = client.app.state.runtime
    with rt.sessions() as s:
        claimed = job_state.claim(s, job.json()["id"], "inline")
        return rt, claimed, s.get(Model, claimed.model_id)


@pytest.mark.parametrize(("queue", "device"), [("cpu", "cpu"), ("gpu", "auto")])
def test_a_job_on_the_cpu_queue_stays_on_the_cpu(client, tmp_path, monkeypatch, queue, device):
    """On a GPU host serving both queues, a cpu-queue job must not take the GPU (and keeps the memory guard)."""
    import workers.tasks as tasks

    seen = {}

    def fake_child(*args, device, **kwargs):
        seen["device"] = device
        raise tasks.CompressionError("stopped here")

    monkeypatch.setattr(tasks, "run_job_in_child", fake_child)
    rt, claimed, model = _claimed(client, tmp_path, {"recipe": "int8", "device": queue})
    assert tasks.execute(rt, claimed, model, "inline").value == "failed"
    assert seen == {"device": device}


def test_a_failure_while_storing_artifacts_keeps_none_of_them(client, tmp_path, monkeypatch):
    """Artifacts go up one by one; when one fails, the job fails and the ones already stored are removed."""
    import workers.tasks as tasks

    rt, claimed, model = _claimed(client, tmp_path, {"recipe": "int8"})
    put_file, stored = rt.blobs.put_file, []

    def failing_second_put(owner, path, sha256=None):
        if len(stored) == 1:
            raise OSError("disk full")
        stored.append(put_file(owner, path, sha256))
        return stored[-1]

    monkeypatch.setattr(rt.blobs, "put_file", failing_second_put)
    assert tasks.execute(rt, claimed, model, "inline").value == "failed"
    done = client.get(f"/v1/jobs/{claimed.id}").json()
    assert done["status"] == "failed" and "disk full" in done["error"]
    with rt.sessions() as s:
        assert s.query(Artifact).filter_by(job_id=claimed.id).count() == 0
    assert len(stored) == 1 and not rt.blobs.exists(stored[0][0])
