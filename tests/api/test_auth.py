"""Authentication, tenant isolation (OWASP API1: every route with an id; every body field with an id is an
entry of tests/api/hostile_inputs.py) and per-tenant limits."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from storage import jobs as job_state
from storage.keys import create_key, revoke
from storage.models import Model
from tests.helpers import digits_npz
from workers.tasks import execute


def _app(settings, **overrides):
    return create_app(settings.model_copy(update={"auth_enabled": True, **overrides}), run_reaper=False)


def _key(app, tenant: str) -> tuple[str, str]:
    with app.state.runtime.sessions() as s:
        row, plaintext = create_key(s, tenant, "test")
    return row.id, plaintext


def _run_inline(app, job_id: str) -> None:
    """Run the job in this process (the real-worker path is covered in tests/e2e)."""
    rt = app.state.runtime
    with rt.sessions() as s:
        job = job_state.claim(s, job_id, "inline")
        model = s.get(Model, job.model_id)
    execute(rt, job, model, "inline")


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory):
    """One app for the module (its inline int8 job is the slow part): tests that change it run last."""
    import secrets

    from core.settings import Settings
    from storage.migrate import upgrade
    from tests.helpers import make_lenet_safetensors

    tmp_path = tmp_path_factory.mktemp("tenants")
    settings = Settings(home=tmp_path / "home", queue_prefix=f"mp-{secrets.token_hex(4)}")
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    lenet_file = make_lenet_safetensors(tmp_path / "lenet.safetensors")
    app = _app(settings)
    with TestClient(app) as client:
        _, key_a = _key(app, "alice")
        _, key_b = _key(app, "bob")
        a = {"Authorization": f"Bearer {key_a}"}
        b = {"Authorization": f"Bearer {key_b}"}
        with open(lenet_file, "rb") as f:
            model = client.post("/v1/models", headers=a, files={"file": ("m.safetensors", f)},
                                data={"architecture": "lenet-300-100"}).json()
        job = client.post("/v1/jobs", headers=a, json={"model_id": model["id"], "recipe": "int8"}).json()
        _run_inline(app, job["id"])
        artifact = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=a).json()[0]
        with open(digits_npz(tmp_path / "digits.npz", n=32), "rb") as f:
            dataset = client.post("/v1/datasets", headers=a, files={"file": ("d.npz", f)}).json()
        yield client, app, a, b, {"model_id": model["id"], "job_id": job["id"], "artifact_id": artifact["id"],
                                  "dataset_id": dataset["id"]}


def test_requests_without_a_valid_key_are_401(two_tenants):
    client, *_ = two_tenants
    for headers in ({}, {"Authorization": "Bearer mp_wrong"}, {"Authorization": "Basic abc"}):
        resp = client.get("/v1/jobs", headers=headers)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200


def test_revoked_key_is_refused(embedded_settings):
    app = _app(embedded_settings, api_key_cache_s=0)
    with TestClient(app) as client:
        key_id, key = _key(app, "carol")
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        with app.state.runtime.sessions() as s:
            assert revoke(s, key_id)
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_a_revoked_key_works_at_most_the_key_cache_time_longer(embedded_settings):
    import time

    app = _app(embedded_settings, api_key_cache_s=0.5)
    with TestClient(app) as client:
        key_id, key = _key(app, "carol")
        h = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/models", headers=h).status_code == 200
        with app.state.runtime.sessions() as s:
            assert revoke(s, key_id)
        revoked_at = time.monotonic()
        while client.get("/v1/models", headers=h).status_code == 200:
            assert time.monotonic() - revoked_at < 0.5, "a revoked key outlived MODELPRESS_API_KEY_CACHE_S"
            time.sleep(0.05)
        assert client.get("/v1/models", headers={"Authorization": "Bearer mp_not-a-key"}).status_code == 401


def _id_routes(app):
    """Every documented route that takes an object id (new routes are covered automatically)."""
    for path, operations in app.openapi()["paths"].items():
        if set(re.findall(r"{(\w+)}", path)) & {"model_id", "job_id", "artifact_id", "dataset_id"}:
            for method in operations:
                yield method.upper(), path


def test_every_route_with_an_id_hides_other_tenants_objects(two_tenants):
    client, app, a, b, ids = two_tenants
    # deletes last, each object before what it depends on (an artifact before its job, a job before its model)
    order = ("{artifact_id}", "{job_id}", "{dataset_id}", "{model_id}")
    routes = sorted(_id_routes(app), key=lambda route: (route[0] == "DELETE", next(
        (i for i, name in enumerate(order) if name in route[1]), 0) if route[0] == "DELETE" else 0))
    assert len(routes) >= 10 and any("{dataset_id}" in path for _, path in routes), routes
    for method, path in routes:
        url = path.format(**ids)
        assert client.request(method, url, headers=b).status_code == 404, (method, url)
        assert client.request(method, url, headers=a).status_code in (200, 204, 206, 409), (method, url)
    # Listings and submits are scoped too.
    assert client.get("/v1/models", headers=b).json()["total"] == 0
    assert client.get("/v1/jobs", headers=b).json()["total"] == 0
    assert client.post("/v1/jobs", headers=b, json={"model_id": ids["model_id"], "recipe": "int8"}).status_code == 404


def test_rate_limit_is_429_with_retry_after(embedded_settings):
    app = _app(embedded_settings, tenant_requests_per_minute=5)
    with TestClient(app) as client:
        _, key = _key(app, "dave")
        h = {"Authorization": f"Bearer {key}"}
        codes = [client.get("/v1/jobs", headers=h).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5] == 429
        resp = client.get("/v1/jobs", headers=h)
        assert int(resp.headers["retry-after"]) >= 1
        _, other = _key(app, "erin")  # buckets are per tenant
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_active_job_limit_is_429(embedded_settings, lenet_file):
    app = _app(embedded_settings, tenant_max_active_jobs=2)
    with TestClient(app) as client:
        _, key = _key(app, "frank")
        h = {"Authorization": f"Bearer {key}"}
        with open(lenet_file, "rb") as f:
            model = client.post("/v1/models", headers=h, files={"file": ("m.safetensors", f)},
                                data={"architecture": "lenet-300-100"}).json()
        body = {"model_id": model["id"], "recipe": "int8"}
        assert [client.post("/v1/jobs", headers=h, json=body).status_code for _ in range(2)] == [201, 201]
        resp = client.post("/v1/jobs", headers=h, json=body)
        assert resp.status_code == 429 and resp.headers["retry-after"]


def test_storage_quota_is_413_and_keeps_nothing(embedded_settings, lenet_file):
    size = lenet_file.stat().st_size
    app = _app(embedded_settings, tenant_storage_quota_bytes=int(size * 1.5))
    with TestClient(app) as client:
        _, key = _key(app, "gina")
        h = {"Authorization": f"Bearer {key}"}
        with open(lenet_file, "rb") as f:
            first = client.post("/v1/models", headers=h, files={"file": ("m.safetensors", f)},
                                data={"architecture": "lenet-300-100"})
        assert first.status_code == 201
        with open(lenet_file, "rb") as f:
            second = client.post("/v1/models", headers=h, files={"file": ("m.safetensors", f)},
                                 data={"architecture": "lenet-300-100"})
        assert second.status_code == 413 and "quota" in second.json()["detail"]
        assert client.get("/v1/models", headers=h).json()["total"] == 1
