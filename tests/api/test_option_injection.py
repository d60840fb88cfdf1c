"""User input never reaches the worker as internal wiring (issue #13): every internal key is a 422 at
every entry point (entries of tests/api/hostile_inputs.py, run here on the real stack), and the worker opens
only files of rows the job's tenant owns, even when a row was written around the API. Runs on the embedded
default and on the real stack (PostgreSQL + Redis)."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from storage.keys import create_key
from storage.models import Job, Model
from tests.api.hostile_inputs import ENTRIES, HOSTILE, OTHER_TENANTS_IDS
from tests.api.test_hostile_inputs import build_world, check_entry, own_ids, send
from workers.tasks import claim_and_run


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


def test_the_hostile_list_on_the_real_stack(stack_settings, tmp_path):
    """tests/api/hostile_inputs.py (option injection at every entry point, other tenants' ids, ...) on
    PostgreSQL + Redis: every entry refused as on the embedded default, nothing stored or shown."""
    with build_world(stack_settings, tmp_path, "stack") as world:
        problems = [problem for entry in ENTRIES if (problem := check_entry(world, entry))]
        assert not problems, problems
        for entry in OTHER_TENANTS_IDS:   # with the caller's own objects they are accepted
            assert send(world, entry["request"], own_ids(world)).status_code == 201, entry["name"]


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
