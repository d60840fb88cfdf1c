"""Deletion and retention (#20): models, jobs and artifacts go with their bytes, a blob two rows share
stays until the last one goes, active jobs are never pulled from under a worker, and usage says it all."""
from __future__ import annotations

from datetime import timedelta

from storage import jobs as job_state
from storage.deletion import sweep_expired_artifacts
from storage.models import Artifact, Job, Model, utcnow
from tests.helpers import upload
from workers.tasks import execute


def _run_inline(client, job_id: str) -> None:
    rt = client.app.state.runtime
    with rt.sessions() as s:
        claimed = job_state.claim(s, job_id, "inline")
        model = s.get(Model, claimed.model_id)
    execute(rt, claimed, model, "inline")


def test_deleting_artifacts_jobs_and_models_frees_their_bytes(client, lenet_file):
    rt = client.app.state.runtime
    first, second = (upload(client, lenet_file).json() for _ in range(2))   # same bytes: one blob, two rows
    with rt.sessions() as s:
        model_key = s.get(Model, first["id"]).blob_key
        assert s.get(Model, second["id"]).blob_key == model_key
    job = client.post("/v1/jobs", json={"model_id": first["id"], "recipe": "fp16"}).json()
    _run_inline(client, job["id"])
    artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    usage = client.get("/v1/usage").json()
    assert usage["models"] == {"bytes": 2 * first["size_bytes"], "count": 2}
    assert usage["artifacts"]["count"] == len(artifacts) >= 3 and usage["used_bytes"] == sum(
        usage[k]["bytes"] for k in ("models", "datasets", "artifacts"))

    # a model with jobs: 409 that names the fix; an active job blocks even a cascade
    resp = client.delete(f"/v1/models/{first['id']}")
    assert resp.status_code == 409 and "cascade=true" in resp.json()["detail"]
    queued = client.post("/v1/jobs", json={"model_id": first["id"], "recipe": "int8"}).json()
    assert client.delete(f"/v1/models/{first['id']}?cascade=true").status_code == 409
    resp = client.delete(f"/v1/jobs/{queued['id']}")
    assert resp.status_code == 409 and "cancel" in resp.json()["detail"]
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"

    # one artifact, then retention takes the rest; the job and its metrics stay
    one = artifacts[0]
    with rt.sessions() as s:
        keys = {a.id: a.blob_key for a in s.query(Artifact).filter(Artifact.job_id == job["id"])}
    assert client.delete(f"/v1/artifacts/{one['id']}").status_code == 204
    assert client.get(f"/v1/artifacts/{one['id']}").status_code == 404 and not rt.blobs.exists(keys[one["id"]])
    with rt.sessions() as s:   # retention keeps what is recent, and what a running job (a rerun) owns
        assert sweep_expired_artifacts(s, rt.blobs, utcnow() - timedelta(days=1)) == 0
        s.query(Job).filter(Job.id == job["id"]).update({"status": "running"})
        s.commit()
        assert sweep_expired_artifacts(s, rt.blobs, utcnow() + timedelta(seconds=1)) == 0
        s.query(Job).filter(Job.id == job["id"]).update({"status": "succeeded"})
        s.commit()
        assert sweep_expired_artifacts(s, rt.blobs, utcnow() + timedelta(seconds=1)) == len(artifacts) - 1
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
    assert client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]["compression_ratio"] > 1
    assert not any(rt.blobs.exists(k) for k in keys.values())

    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/v1/models/{first['id']}?cascade=true").status_code == 204   # takes the cancelled job
    assert client.get(f"/v1/jobs/{queued['id']}").status_code == 404
    assert rt.blobs.exists(model_key)   # the second row still holds the shared blob
    assert client.delete(f"/v1/models/{second['id']}").status_code == 204
    assert not rt.blobs.exists(model_key)
    usage = client.get("/v1/usage").json()
    assert usage["used_bytes"] == 0 and usage["active_jobs"] == 0 and usage["models"]["count"] == 0
    with rt.sessions() as s:
        assert s.query(Job).count() == 0



def test_a_full_quota_is_recovered_by_deleting(embedded_settings, lenet_file):
    """Fill the tenant quota with uploads; the next one is refused with what is left, a deletion makes room."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    size = lenet_file.stat().st_size
    settings = embedded_settings.model_copy(update={"tenant_storage_quota_bytes": int(size * 2.5)})
    with TestClient(create_app(settings, run_reaper=False)) as client:
        kept = [upload(client, lenet_file).json() for _ in range(2)]
        full = upload(client, lenet_file)
        assert full.status_code == 413 and "quota" in full.json()["detail"], full.text
        usage = client.get("/v1/usage").json()
        assert usage["used_bytes"] == 2 * size and usage["quota_bytes"] == int(size * 2.5)
        assert client.delete(f"/v1/models/{kept[0]['id']}").status_code == 204
        assert upload(client, lenet_file).status_code == 201
        assert client.get("/v1/usage").json()["used_bytes"] == 2 * size
