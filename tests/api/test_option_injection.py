"""User input never reaches the worker as internal wiring (issue #13): every internal key is a 422 at
every entry point, and the worker opens only files of rows the job's tenant owns, even when a row
was written around the API. Runs on the embedded default and on the real stack (PostgreSQL + Redis)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from compression.formats.options import RESERVED_KEYS
from storage.keys import create_key
from storage.models import Job, Model
from workers.tasks import claim_and_run

HOSTILE = ["/etc/hostname", "safetensors", {"architecture": "lenet-300-100"}]
INTERNAL = sorted(RESERVED_KEYS | {"model_path", "model_options", "teacher", "datasets", "checkpoint_dir"})


@pytest.fixture(params=["embedded", "stack"])
def tenants(request):
    settings = request.getfixturevalue(f"{request.param}_settings")
    app = create_app(settings.model_copy(update={"auth_enabled": True}), run_reaper=False)
    with TestClient(app) as client:
        keys = {}
        for tenant in ("alice", "bob"):
            with app.state.runtime.sessions() as s:
                keys[tenant] = {"Authorization": f"Bearer {create_key(s, tenant, 'test')[1]}"}
        yield client, app.state.runtime, keys


def _upload(client, headers, path, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/models", headers=headers, files={"file": (path.name, f)},
                           data={"architecture": "lenet-300-100", **fields})


def _stored_files(rt) -> int:
    return sum(1 for p in rt.settings.resolved_storage_dir.rglob("*") if p.is_file())


def test_every_internal_key_is_a_422_at_every_entry_point(tenants, lenet_file):
    client, rt, keys = tenants
    alice = keys["alice"]
    for key in INTERNAL:
        resp = _upload(client, alice, lenet_file, options=json.dumps({key: HOSTILE}))
        assert resp.status_code == 422 and f"options.{key}" in resp.text, (key, resp.text)
        resp = _upload(client, alice, lenet_file, **{key: json.dumps(HOSTILE)})   # as a form field
        assert resp.status_code == 422 and key in resp.text, (key, resp.text)
    assert "reserved" in _upload(client, alice, lenet_file, options='{"teacher_file": "/x"}').text
    for bad in ('{"input_shape": "/etc/passwd"}', '{"sample_dataset": "../../etc/passwd"}', "[1, 2]",
                '{"input_shapes": {"x": [1, -1]}}', '{"input_dtype": "object"}'):
        assert _upload(client, alice, lenet_file, options=bad).status_code == 422, bad
    with rt.sessions() as s:   # nothing written half-way
        assert s.scalar(select(func.count()).select_from(Model)) == 0
    assert _stored_files(rt) == 0

    model = _upload(client, alice, lenet_file).json()
    base = {"model_id": model["id"], "recipe": "int8"}
    for key in INTERNAL:
        bodies = [{**base, key: HOSTILE}, {**base, "data": {key: HOSTILE}},
                  {"model_id": model["id"], "pipeline": {"stages": [{"kind": "int8"}], key: HOSTILE}},
                  {"model_id": model["id"], "pipeline": {"stages": [{"kind": "int8", key: HOSTILE}]}}]
        for body in bodies:
            resp = client.post("/v1/jobs", headers=alice, json=body)
            assert resp.status_code == 422, (body, resp.text)
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def _job_error(client, headers, job_id: str) -> str:
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert job["status"] == "failed", job
    return job["error"]


def test_the_worker_refuses_internal_keys_in_rows_written_around_the_api(tenants, lenet_file):
    """A row from before the allow-list (or written by anything but the API) cannot steer the worker."""
    client, rt, keys = tenants
    model = _upload(client, keys["alice"], lenet_file).json()
    job = client.post("/v1/jobs", headers=keys["alice"], json={"model_id": model["id"], "recipe": "int8"}).json()
    with rt.sessions() as s:
        s.execute(update(Model).where(Model.id == model["id"]).values(
            options={"architecture": "lenet-300-100", "teacher_file": HOSTILE}))
        s.commit()
    assert claim_and_run(rt, job["id"], "test-worker") == "failed"
    error = _job_error(client, keys["alice"], job["id"])
    assert "teacher_file is reserved" in error and "upload the model again" in error, error
    assert client.get(f"/v1/jobs/{job['id']}/artifacts", headers=keys["alice"]).json() == []


def test_the_worker_opens_only_the_jobs_tenants_rows(tenants, lenet_file, tmp_path):
    """Rows that name another tenant's model or dataset (written around the API's ownership checks)
    fail the job with a reason; the other tenant's file is never loaded."""
    client, rt, keys = tenants
    alice, bob = keys["alice"], keys["bob"]
    theirs = _upload(client, alice, lenet_file).json()
    samples = tmp_path / "samples.npz"
    np.savez(samples, inputs=np.random.default_rng(0).normal(size=(16, 784)).astype(np.float32))
    with open(samples, "rb") as f:
        their_data = client.post("/v1/datasets", headers=alice, files={"file": ("s.npz", f)}).json()
    mine = _upload(client, bob, lenet_file).json()

    stages = {"stages": [{"kind": "finetune", "epochs": 1}]}
    assert client.post("/v1/jobs", headers=bob, json={"model_id": mine["id"], "pipeline": stages,
                                                      "teacher_model_id": theirs["id"],
                                                      "data": {"train": their_data["id"]}}).status_code == 404
    job = client.post("/v1/jobs", headers=bob, json={"model_id": mine["id"], "recipe": "int8"}).json()
    with rt.sessions() as s:   # as if the submit checks had been bypassed
        s.execute(update(Job).where(Job.id == job["id"]).values(teacher_model_id=theirs["id"]))
        s.commit()
    assert claim_and_run(rt, job["id"], "test-worker") == "failed"
    assert f"teacher model {theirs['id']} is not this tenant's" in _job_error(client, bob, job["id"])

    job = client.post("/v1/jobs", headers=bob, json={"model_id": mine["id"], "recipe": "int8"}).json()
    with rt.sessions() as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(data={"eval": their_data["id"]}))
        s.execute(update(Model).where(Model.id == mine["id"]).values(
            options={"architecture": "lenet-300-100", "sample_dataset": their_data["id"]}))
        s.commit()
    assert claim_and_run(rt, job["id"], "test-worker") == "failed"
    assert "the eval dataset was deleted" in _job_error(client, bob, job["id"])

    job = client.post("/v1/jobs", headers=bob, json={"model_id": mine["id"], "recipe": "int8"}).json()
    assert claim_and_run(rt, job["id"], "test-worker") == "failed"
    assert f"sample-input dataset {their_data['id']} was deleted" in _job_error(client, bob, job["id"])


def test_a_sample_dataset_of_another_tenant_is_404_at_upload(tenants, lenet_file, tmp_path):
    client, _, keys = tenants
    samples = tmp_path / "samples.npz"
    np.savez(samples, inputs=np.zeros((4, 784), np.float32))
    with open(samples, "rb") as f:
        theirs = client.post("/v1/datasets", headers=keys["alice"], files={"file": ("s.npz", f)}).json()
    resp = _upload(client, keys["bob"], lenet_file, options=json.dumps({"sample_dataset": theirs["id"]}))
    assert resp.status_code == 404, resp.text

