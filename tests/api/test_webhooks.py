"""Webhooks and per-tenant settings (#20): a finished job's document is POSTed to its callback_url, signed
with the tenant's secret, retried with backoff and logged on the job; private targets are refused at
submit and again at delivery; tenants keep their own default callback, secret and artifact retention."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from core.reaper import reap_once
from core.webhooks import deliver_once
from storage.keys import create_key
from storage.models import Artifact, Job, utcnow
from workers import webhooks as webhook_task
from workers.tasks import claim_and_run

ALLOW = "MODELPRESS_WEBHOOK_ALLOW_HOSTS"


class Receiver:
    """A real HTTP receiver on 127.0.0.1 answering the given status codes in turn (then 200)."""

    def __init__(self, answers=(), headers=None):
        self.answers, self.requests = list(answers), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(answers=(), headers=None):
        made.append(Receiver(answers, headers))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _service(settings, **overrides):
    """An app with auth on, two tenants, and the webhook sends captured instead of put on the broker."""
    app = create_app(settings.model_copy(update={"auth_enabled": True, **overrides}), run_reaper=False)
    client = TestClient(app)
    client.__enter__()
    rt = app.state.runtime
    rt.sent = []
    rt.enqueue_webhook = rt.sent.append
    heads = {}
    for tenant in ("alice", "bob"):
        with rt.sessions() as s:
            heads[tenant] = {"Authorization": f"Bearer {create_key(s, tenant, 'test')[1]}"}
    return client, rt, heads


@pytest.fixture(params=["embedded", "stack"])
def allowed(request):
    """The operator allow-list admits the local receiver; backoff is tiny. SQLite and PostgreSQL + Redis."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    client, rt, heads = _service(settings, webhook_allow_hosts=["127.0.0.1/32"], webhook_backoff_s=0.01)
    yield client, rt, heads
    client.__exit__(None, None, None)


@pytest.fixture
def strict(embedded_settings):
    """No allow-list: the default."""
    client, rt, heads = _service(embedded_settings, webhook_backoff_s=0.01)
    yield client, rt, heads
    client.__exit__(None, None, None)


def _submit(client, headers, lenet_file, **body):
    model = _upload(client, headers, lenet_file)
    return client.post("/v1/jobs", headers=headers, json={"model_id": model["id"], "recipe": "int8", **body})


def _upload(client, headers, path):
    with open(path, "rb") as f:
        resp = client.post("/v1/models", headers=headers, files={"file": (path.name, f)},
                           data={"architecture": "lenet-300-100"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _finish_by_cancel(client, headers, job_id):
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()["status"] == "cancelled"


def _run_task(rt, monkeypatch, job_id):
    """The Celery task itself, eagerly: its retries run at once (the backoff is logged on the job)."""
    monkeypatch.setattr(webhook_task, "runtime", lambda: rt)
    webhook_task.deliver_webhook.apply(args=[job_id])


def test_webhook_delivered_with_a_valid_signature_and_retried_after_a_refused_first_attempt(
        allowed, receiver, lenet_file, monkeypatch):
    client, rt, heads = allowed
    alice = heads["alice"]
    hook = receiver(answers=[500])
    secret = client.post("/v1/tenant/webhook-secret", headers=alice).json()["webhook_secret"]
    assert len(secret) == 64 and client.get("/v1/tenant/settings", headers=alice).json()["webhook_secret_set"]
    job = _submit(client, alice, lenet_file, callback_url=hook.url + "?token=t1").json()
    assert job["callback"] == {"url": hook.url + "?token=t1", "status": None, "deliveries": []}

    _finish_by_cancel(client, alice, job["id"])
    assert rt.sent == [job["id"]]
    _run_task(rt, monkeypatch, job["id"])

    assert len(hook.requests) == 2
    doc = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    for path, headers, body in hook.requests:
        assert path == "/hook?token=t1" and headers["Content-Type"] == "application/json"
        assert headers["X-Modelpress-Event"] == "job.finished"
        assert headers["X-Modelpress-Delivery"] == f"{job['id']}:job.finished"   # the same on every attempt
        signed = headers["X-Modelpress-Timestamp"].encode() + b"." + body
        expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Modelpress-Signature"], expected)
        sent = json.loads(body)   # the job document, without its own delivery log
        assert sent["callback"] == {"url": hook.url + "?token=t1"} and sent["status"] == "cancelled"
        assert {k: v for k, v in sent.items() if k != "callback"} == {k: v for k, v in doc.items() if k != "callback"}
        assert secret not in body.decode()
    assert hook.requests[0][2] == hook.requests[1][2]

    callback = doc["callback"]
    assert callback["status"] == "delivered" and [d["attempt"] for d in callback["deliveries"]] == [1, 2]
    first, second = callback["deliveries"]
    assert first["status_code"] == 500 and first["error"] == "HTTP 500" and first["next_attempt_in_s"] == 0.01
    assert second["status_code"] == 200 and second["error"] is None and second["next_attempt_in_s"] is None
    assert deliver_once(rt, job["id"]) is None and len(hook.requests) == 2   # a duplicate message: nothing sent


def test_redirects_are_not_followed_and_attempts_stop_at_the_maximum(embedded_settings, receiver, lenet_file,
                                                                     monkeypatch):
    client, rt, heads = _service(embedded_settings, webhook_allow_hosts=["127.0.0.1"], webhook_backoff_s=0.01,
                                 webhook_max_attempts=5)
    try:
        elsewhere = receiver()
        hook = receiver(answers=[302] * 5, headers={"Location": elsewhere.url})
        job = _submit(client, heads["alice"], lenet_file, callback_url=hook.url).json()
        _finish_by_cancel(client, heads["alice"], job["id"])
        _run_task(rt, monkeypatch, job["id"])
        callback = client.get(f"/v1/jobs/{job['id']}", headers=heads["alice"]).json()["callback"]
    finally:
        client.__exit__(None, None, None)
    assert len(hook.requests) == 5 and elsewhere.requests == []   # more than Celery's default 3 retries
    assert callback["status"] == "failed"
    assert [d["error"] for d in callback["deliveries"]] == ["HTTP 302 (redirects are not followed)"] * 5
    assert [d["next_attempt_in_s"] for d in callback["deliveries"]] == [0.01, 0.02, 0.04, 0.08, None]


def test_a_private_callback_url_is_a_422_at_submit_that_names_the_allow_list(strict, lenet_file):
    client, rt, heads = strict
    alice = heads["alice"]
    model = _upload(client, alice, lenet_file)
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.1.2.3/", "http://[::1]/"):
        resp = client.post("/v1/jobs", headers=alice, json={"model_id": model["id"], "recipe": "int8",
                                                           "callback_url": url})
        assert resp.status_code == 422, resp.text
        error = resp.json()["detail"][0]
        assert error["loc"] == ["body", "callback_url"] and ALLOW in error["msg"], error
    resp = client.patch("/v1/tenant/settings", headers=alice, json={"callback_url": "http://192.168.1.10/"})
    assert resp.status_code == 422 and ALLOW in resp.text
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    assert client.get("/v1/tenant/settings", headers=alice).json()["callback_url"] is None


def test_a_name_that_resolves_to_a_private_address_at_delivery_is_refused(strict, receiver, lenet_file,
                                                                          monkeypatch):
    """Checked at submit (public then) and again on the attempt (loopback now): nothing is sent."""
    client, rt, heads = strict
    hook = receiver()
    answers = iter(["93.184.216.34", "127.0.0.1"])
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host != "hooks.example.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    url = f"http://hooks.example.test:{hook.server.server_port}/hook"
    job = _submit(client, heads["alice"], lenet_file, callback_url=url)
    assert job.status_code == 201, job.text
    _finish_by_cancel(client, heads["alice"], job.json()["id"])
    assert deliver_once(rt, job.json()["id"]) is None   # a refused target is not retried
    callback = client.get(f"/v1/jobs/{job.json()['id']}", headers=heads["alice"]).json()["callback"]
    assert hook.requests == [] and callback["status"] == "failed"
    assert "resolves to 127.0.0.1, a loopback address" in callback["deliveries"][0]["error"]


def test_the_tenant_default_callback_is_used_when_the_job_gives_none(allowed, receiver, lenet_file, monkeypatch):
    client, rt, heads = allowed
    alice, bob = heads["alice"], heads["bob"]
    default, own = receiver(), receiver()
    resp = client.patch("/v1/tenant/settings", headers=alice, json={"callback_url": default.url})
    assert resp.status_code == 200 and resp.json()["callback_url"] == default.url
    by_default = _submit(client, alice, lenet_file).json()
    by_job = _submit(client, alice, lenet_file, callback_url=own.url).json()
    bobs = _submit(client, bob, lenet_file).json()
    assert by_default["callback"]["url"] == default.url and by_job["callback"]["url"] == own.url
    assert bobs["callback"] is None   # another tenant's default is not bob's
    for job in (by_default, by_job, bobs):
        _finish_by_cancel(client, alice if job is not bobs else bob, job["id"])
    assert rt.sent == [by_default["id"], by_job["id"]]
    for job_id in rt.sent:
        _run_task(rt, monkeypatch, job_id)
    assert len(default.requests) == 1 and len(own.requests) == 1
    assert json.loads(default.requests[0][2])["id"] == by_default["id"]


def test_tenant_settings_belong_to_their_tenant(allowed):
    client, _, heads = allowed
    alice, bob = heads["alice"], heads["bob"]
    fresh = client.get("/v1/tenant/settings", headers=bob).json()
    assert fresh == {"tenant": "bob", "callback_url": None, "artifact_retention_days": None,
                     "service_artifact_retention_days": None, "webhook_secret_set": False}
    changed = client.patch("/v1/tenant/settings", headers=alice, json={"artifact_retention_days": 3,
                                                                       "callback_url": "http://127.0.0.1:9/h"})
    assert changed.status_code == 200 and changed.json()["artifact_retention_days"] == 3
    assert client.get("/v1/tenant/settings", headers=bob).json() == fresh
    assert client.get("/v1/usage", headers=alice).json()["artifact_retention_days"] == 3
    assert client.get("/v1/usage", headers=bob).json()["artifact_retention_days"] is None
    first = client.post("/v1/tenant/webhook-secret", headers=alice).json()["webhook_secret"]
    second = client.post("/v1/tenant/webhook-secret", headers=alice).json()["webhook_secret"]
    theirs = client.post("/v1/tenant/webhook-secret", headers=bob).json()["webhook_secret"]
    assert len({first, second, theirs}) == 3
    assert second not in client.get("/v1/tenant/settings", headers=alice).text
    # null sets a field back to the default; fields not given stay; unknown fields are refused
    cleared = client.patch("/v1/tenant/settings", headers=alice, json={"callback_url": None}).json()
    assert cleared["callback_url"] is None and cleared["artifact_retention_days"] == 3
    assert client.patch("/v1/tenant/settings", headers=alice, json={"webhook_secret": "x"}).status_code == 422
    assert client.patch("/v1/tenant/settings", headers=alice, json={"artifact_retention_days": 0}).status_code == 422
    assert client.get("/v1/tenant/settings").status_code == 401


def test_every_final_state_makes_the_webhook_due_and_the_reaper_resends_lost_ones(allowed, lenet_file):
    client, rt, heads = allowed
    alice = heads["alice"]
    url = "http://127.0.0.1:9/hook"
    cancelled, by_worker, by_reaper = (_submit(client, alice, lenet_file, callback_url=url).json()["id"]
                                       for _ in range(3))
    without = _submit(client, alice, lenet_file).json()["id"]
    _finish_by_cancel(client, alice, cancelled)
    with rt.sessions() as s:   # the worker finds a dataset gone; the reaper finds a worker gone
        s.execute(update(Job).where(Job.id.in_([by_worker, without])).values(data={"eval": "ds_gone"}))
        s.execute(update(Job).where(Job.id == by_reaper).values(
            status="running", attempts=rt.settings.max_attempts, worker="w", heartbeat_at=utcnow() - timedelta(hours=1)))
        s.commit()
    assert claim_and_run(rt, by_worker, "w") == "failed" and claim_and_run(rt, without, "w") == "failed"
    reap_once(rt)
    assert rt.sent == [cancelled, by_worker, by_reaper]   # not the job without a callback
    with rt.sessions() as s:
        assert {j.callback_status for j in s.scalars(select(Job).where(Job.id.in_(rt.sent)))} == {"pending"}
        assert s.get(Job, without).callback_status is None
        s.execute(update(Job).where(Job.id == cancelled).values(callback_due_at=utcnow() - timedelta(hours=1)))
        s.commit()
    rt.sent.clear()
    reap_once(rt)
    assert rt.sent == [cancelled]   # its message was lost: sent again


def _finished_job_with_artifact(rt, owner: str, model_id: str, age: timedelta, tmp_path) -> str:
    artifact = tmp_path / f"{owner}-{age.days}.bin"
    artifact.write_bytes(f"{owner} {age}".encode())
    key, size, sha = rt.blobs.put_file(owner, artifact)
    then = utcnow() - age
    with rt.sessions() as s:
        job = Job(owner=owner, model_id=model_id, pipeline={}, queue="q", status="succeeded", finished_at=then)
        s.add(job)
        s.flush()
        s.add(Artifact(owner=owner, job_id=job.id, name="model.mpz", kind="container", size_bytes=size, sha256=sha,
                       blob_key=key, created_at=then))
        s.commit()
        return job.id


def test_a_tenants_retention_overrides_the_services_in_the_reaper(allowed, lenet_file, tmp_path):
    client, rt, heads = allowed
    models = {t: _upload(client, heads[t], lenet_file)["id"] for t in ("alice", "bob")}
    old, recent = timedelta(days=2, hours=1), timedelta(hours=1)
    jobs = {(t, age.days): _finished_job_with_artifact(rt, t, models[t], age, tmp_path)
            for t in ("alice", "bob") for age in (old, recent)}

    def left() -> set:
        with rt.sessions() as s:
            ids = set(s.scalars(select(Artifact.job_id)))
        return {where for where, job_id in jobs.items() if job_id in ids}

    assert client.patch("/v1/tenant/settings", headers=heads["alice"],
                        json={"artifact_retention_days": 1}).status_code == 200
    reap_once(rt)   # no service retention: only alice's own applies
    assert left() == {("alice", 0), ("bob", 2), ("bob", 0)}
    rt.settings = rt.settings.model_copy(update={"artifact_retention_days": 1})
    assert client.patch("/v1/tenant/settings", headers=heads["alice"],
                        json={"artifact_retention_days": 30}).status_code == 200
    jobs[("alice", 2)] = _finished_job_with_artifact(rt, "alice", models["alice"], old, tmp_path)
    reap_once(rt)   # the service's day for bob; alice keeps hers for 30
    assert left() == {("alice", 2), ("alice", 0), ("bob", 0)}
    assert client.get("/v1/usage", headers=heads["bob"]).json()["artifact_retention_days"] == 1
