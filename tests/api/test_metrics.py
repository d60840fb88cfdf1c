"""GET /metrics: HTTP metrics by route template, bytes in and out, job and queue figures from the database
(on SQLite and PostgreSQL), no tenant data, and the optional bearer token."""
from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from storage import jobs as job_state
from storage.models import Artifact, JobStatus
from tests.helpers import upload


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _run(client, job_id: str, status: JobStatus, *, error: str | None = None, artifact=None) -> None:
    """What a worker records for a job, through the same state transitions (the compute is not the point)."""
    rt = client.app.state.runtime
    rows = []
    if artifact is not None:
        key, size, sha = rt.blobs.put_file("local", artifact)
        rows = [Artifact(owner="local", job_id=job_id, name="model.mpz", kind="container", size_bytes=size,
                         sha256=sha, blob_key=key)]
    with rt.sessions() as s:
        assert job_state.claim(s, job_id, "w1") is not None
        assert job_state.finish(s, job_id, "w1", status, error=error, metrics={}, artifacts=rows)


def _world(client, lenet_file, tmp_path) -> dict:
    model = upload(client, lenet_file).json()
    submit = lambda body: client.post("/v1/jobs", json={"model_id": model["id"], **body}).json()["id"]
    ok = submit({"recipe": "fp16"})
    failed = submit({"pipeline": {"stages": [{"kind": "quantize", "dtype": "int8"}]}})
    queued = submit({"recipe": "int8", "device": "gpu"})
    (tmp_path / "out.bin").write_bytes(b"x" * 4096)
    _run(client, ok, JobStatus.succeeded, artifact=tmp_path / "out.bin")
    _run(client, failed, JobStatus.failed, error="internal error: RuntimeError: boom")
    assert client.get(f"/v1/jobs/{ok}").status_code == 200
    art = client.get(f"/v1/jobs/{ok}/artifacts").json()[0]
    assert client.get(art["download_url"]).content == b"x" * 4096
    return {"model": model["id"], "jobs": [ok, failed, queued], "artifact": art["id"]}


def test_metrics_show_http_bytes_and_jobs_and_no_tenant_data(client, lenet_file, tmp_path):
    ids = _world(client, lenet_file, tmp_path)
    text = client.get("/metrics").text
    got = _samples(text)
    queue = client.app.state.runtime.settings.queue_name
    assert got[("http_requests_total", (("handler", "/v1/jobs/{job_id}"), ("method", "GET"), ("status", "2xx")))] >= 1
    assert got[("modelpress_upload_bytes_total", (("kind", "model"),))] >= lenet_file.stat().st_size
    assert got[("modelpress_download_bytes_total", ())] == 4096
    assert got[("modelpress_jobs", (("queue", queue("cpu")), ("status", "succeeded")))] == 1
    assert got[("modelpress_jobs", (("queue", queue("gpu")), ("status", "queued")))] == 1
    assert got[("modelpress_queue_oldest_job_age_seconds", (("queue", queue("gpu")),))] >= 0
    assert got[("modelpress_job_duration_seconds_count", (("method", "fp16"), ("outcome", "succeeded")))] == 1
    assert got[("modelpress_jobs_finished_total", (("method", "quantize"), ("outcome", "failed")))] == 1
    assert got[("modelpress_job_failures_total", (("error_class", "internal"), ("method", "quantize")))] == 1
    assert got[("modelpress_model_inspections", (("status", "pending"),))] == 1
    leaks = [value for value in [ids["model"], ids["artifact"], *ids["jobs"], "local"] if value in text]
    assert not leaks, leaks


def test_metrics_token_is_required_when_set(embedded_settings):
    token = "s3cret-metrics-token"
    app = create_app(embedded_settings.model_copy(update={"metrics_token": SecretStr(token)}), run_reaper=False)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
        resp = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and "modelpress_jobs" in resp.text
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_job_figures_from_postgresql(stack_settings, lenet_file, tmp_path):
    """The GROUP BY and duration arithmetic differ by dialect; PostgreSQL is the production database."""
    with TestClient(create_app(stack_settings, run_reaper=False)) as client:
        _world(client, lenet_file, tmp_path)
        got = _samples(client.get("/metrics").text)
    assert got[("modelpress_job_duration_seconds_count", (("method", "fp16"), ("outcome", "succeeded")))] == 1
    assert got[("modelpress_job_duration_seconds_bucket", (("le", "+Inf"), ("method", "fp16"),
                                                           ("outcome", "succeeded")))] == 1
    assert got[("modelpress_job_failures_total", (("error_class", "internal"), ("method", "quantize")))] == 1


def test_error_classes():
    from storage.job_stats import ERROR_CLASSES

    def classify(error: str) -> str:   # LIKE, as the database matches it
        import re
        for pattern, name in ERROR_CLASSES:
            if re.fullmatch(re.escape(pattern).replace("%", ".*"), error, re.S):
                return name
        return "user"

    assert classify("internal error: ValueError: x") == "internal"
    assert classify("time limit of 3600 s exceeded") == "time_limit"
    assert classify("the model needed more than the memory limit of 12.0 GiB") == "memory_limit"
    assert classify("the job process was killed by signal SIGKILL") == "crashed"
    assert classify("worker w:1 stopped responding (no heartbeat for 120 s); gave up after 2 attempt(s)") \
        == "worker_lost"
    assert classify("the calibration dataset was deleted") == "input_gone"
    assert classify("low_rank applies to conv layers; the model has none") == "user"


def test_job_method_labels():
    from api.metrics import job_method

    assert job_method("int8", '{"stages": []}') == "int8"
    assert job_method(None, '{"goal": {"target": {}}}') == "goal"
    assert job_method(None, '{"stages": [{"kind": "prune"}, {"kind": "finetune"}]}') == "prune+finetune"
    assert job_method(None, None) == "pipeline"
