"""Submitting, validating, listing and cancelling jobs (no worker runs here)."""
from __future__ import annotations

import pytest

from tests.helpers import upload


@pytest.fixture
def model_id(client, lenet_file):
    resp = upload(client, lenet_file)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_submit_recipe_queues_a_job(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert job["pipeline"]["stages"][0]["kind"] == "quantize"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{job['id']}/metrics").json() == {"job_id": job["id"], "status": "queued", "metrics": None}
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []


def test_bad_spec_is_422_naming_the_field(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {
        "stages": [{"kind": "quantize", "dtype": "int8", "bogus": 1}]}})
    assert resp.status_code == 422
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert any(loc[:3] == ["body", "pipeline", "stages"] and loc[-1] == "bogus" for loc in locs), locs

    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {
        "stages": [{"kind": "quantize", "dtype": "int13"}]}})
    assert resp.status_code == 422 and any("dtype" in e["loc"] for e in resp.json()["detail"])

    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": [{"kind": "no-such"}]}})
    assert resp.status_code == 422

    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {"stages": []}})
    assert resp.status_code == 422


def test_exclude_pattern_matching_nothing_is_422(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {
        "stages": [{"kind": "quantize", "dtype": "int8", "exclude": ["no_such_layer*"]}]}})
    assert resp.status_code == 422
    assert "no_such_layer" in str(resp.json()["detail"])


def test_recipe_xor_pipeline_and_unknown_recipe(client, model_id):
    assert client.post("/v1/jobs", json={"model_id": model_id}).status_code == 422
    both = {"model_id": model_id, "recipe": "int8", "pipeline": {"stages": [{"kind": "quantize", "dtype": "fp16"}]}}
    assert client.post("/v1/jobs", json=both).status_code == 422
    resp = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "nope"})
    assert resp.status_code == 422 and "int8" in str(resp.json()["detail"])


def test_unknown_model_is_404_and_no_job_row(client):
    assert client.post("/v1/jobs", json={"model_id": "mdl_nope", "recipe": "int8"}).status_code == 404
    assert client.get("/v1/jobs").json()["total"] == 0
    assert client.get("/v1/jobs/job_nope").status_code == 404
    assert client.post("/v1/jobs/job_nope/cancel").status_code == 404
    assert client.get("/v1/jobs/job_nope/metrics").status_code == 404
    assert client.get("/v1/jobs/job_nope/artifacts").status_code == 404
    assert client.get("/v1/artifacts/art_nope/download").status_code == 404


def test_idempotency_key(client, model_id):
    body = {"model_id": model_id, "recipe": "int8"}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert client.get("/v1/jobs").json()["total"] == 1
    other = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "fp16"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k2"}).json()["id"] != first.json()["id"]


def test_cancel_queued_then_cancel_again_is_409(client, model_id):
    job = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"}).json()
    resp = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_list_filters_and_paginates(client, model_id):
    ids = [client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"}).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"status": "queued", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["next_offset"] == 1
    assert client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


def test_catalog(client):
    methods = client.get("/v1/methods").json()
    assert "quantize" in methods and methods["quantize"]["type"] == "object"
    recipes = {r["name"]: r for r in client.get("/v1/recipes").json()}
    assert {"fp16", "int8"} <= set(recipes)
    assert client.get("/v1/recipes/int8").json() == recipes["int8"]
    assert client.get("/v1/recipes/nope").status_code == 404


def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_readyz_reports_an_unreachable_broker(embedded_settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    broken = embedded_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken, run_reaper=False)) as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["database"] == "ok" and resp.json()["checks"]["broker"].startswith("error")


def test_submit_survives_a_broker_outage(embedded_settings, lenet_file):
    """The job is kept (queued) and the reaper re-sends it later; nothing is lost."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    broken = embedded_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken, run_reaper=False)) as c:
        model_id = upload(c, lenet_file).json()["id"]
        resp = c.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"})
        assert resp.status_code == 201 and resp.json()["status"] == "queued"


def test_stage_needing_calibration_data_is_422_at_submit(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "pipeline": {
        "stages": [{"kind": "prune", "sparsity": 0.5, "criterion": "saliency"}]}})
    assert resp.status_code == 422 and "calibration data" in str(resp.json()["detail"])
    assert client.get("/v1/jobs").json()["total"] == 0


def test_deep_compression_recipe_is_accepted(client, model_id):
    resp = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "deep-compression"})
    assert resp.status_code == 201, resp.text
    assert [s["kind"] for s in resp.json()["pipeline"]["stages"]] == ["prune", "share", "huffman"]


def test_openapi_documents_every_error_shape(client):
    spec = client.get("/openapi.json").json()
    missing = [(method, path, code) for path, ops in spec["paths"].items() for method, op in ops.items()
               for code, resp in op["responses"].items() if code[0] in "45" and "content" not in resp]
    assert missing == []


def test_a_jobs_quality_bar_is_stored_with_its_pipeline_and_its_verdict_shown(client, model_id):
    from storage import jobs as job_state
    from storage.models import Model
    from workers.tasks import execute

    body = {"model_id": model_id, "recipe": "int8", "quality": {"metric": "cosine", "min": 0.9999999}}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["pipeline"]["quality"] == {"metric": "cosine", "min": 0.9999999} and job["quality"] is None
    both = {"model_id": model_id, "quality": {"min": 0.5},
            "pipeline": {"stages": [{"kind": "int8"}], "quality": {"min": 0.5}}}
    assert client.post("/v1/jobs", json=both).status_code == 422
    for bad in ({"metric": "cosine", "max": 1}, {"min": 0.5, "max_drop": 0.1}, {"floor": 1}):
        resp = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8", "quality": bad})
        assert resp.status_code == 422, (bad, resp.text)
    assert "quality" not in client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"}).json()["pipeline"]

    rt = client.app.state.runtime
    with rt.sessions() as s:
        claimed = job_state.claim(s, job["id"], "inline")
        model = s.get(Model, claimed.model_id)
    execute(rt, claimed, model, "inline")
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["quality"]["passed"] is False, done
    assert done["quality"]["min"] == 0.9999999 and done["quality"]["real_inputs"] is False


def test_goal_jobs_are_checked_at_submit(client, model_id, tmp_path):
    from tests.helpers import digits_npz, upload_dataset

    goal = {"target": {"ratio": 8}, "constraint": {"metric": "cosine", "min": 0.98}}
    no_data = client.post("/v1/jobs", json={"model_id": model_id, "goal": goal})
    assert no_data.status_code == 422 and "data.calibration or data.eval" in no_data.text
    both = client.post("/v1/jobs", json={"model_id": model_id, "goal": goal, "recipe": "int8"})
    assert both.status_code == 422 and "exactly one of 'pipeline', 'recipe', 'goal' or 'analyze'" in both.text
    for bad in ({"target": {"speedup": 3, "ratio": 8}}, {"target": {"ratio": 8}, "constraint": {"min": 1, "max_drop": 0.1}}):
        assert client.post("/v1/jobs", json={"model_id": model_id, "goal": bad}).status_code == 422
    dataset = upload_dataset(client, digits_npz(tmp_path / "d.npz", n=64)).json()
    resp = client.post("/v1/jobs", json={"model_id": model_id, "goal": goal, "data": {"calibration": dataset["id"]}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["pipeline"] == {"goal": {**goal, "budget_minutes": 15.0, "seed": 0}}
    assert client.post("/v1/jobs", json={"model_id": model_id, "goal": goal, "data": {"calibration": dataset["id"]},
                                         "teacher_model_id": model_id}).status_code == 422
    queued = client.get(f"/v1/jobs/{resp.json()['id']}/sensitivity").json()
    assert queued == {"job_id": resp.json()["id"], "status": "queued", "sensitivity": None}


def test_analyze_jobs_are_checked_at_submit(client, model_id, tmp_path):
    from tests.helpers import digits_npz, upload_dataset

    assert client.post("/v1/jobs", json={"model_id": model_id, "analyze": {}}).status_code == 422
    dataset = upload_dataset(client, digits_npz(tmp_path / "d.npz", n=64)).json()
    for bad in ({"metric": "bleu"}, {"samples": 2}, {"extra": 1}):
        resp = client.post("/v1/jobs", json={"model_id": model_id, "analyze": bad, "data": {"eval": dataset["id"]}})
        assert resp.status_code == 422, bad
    resp = client.post("/v1/jobs", json={"model_id": model_id, "analyze": {"metric": "top1"},
                                         "data": {"eval": dataset["id"]}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["pipeline"] == {"analyze": {"metric": "top1", "samples": 256, "budget_minutes": 15.0, "seed": 0}}
    assert client.post("/v1/jobs", json={"model_id": model_id, "analyze": {}, "quality": {"max_drop": 0.01},
                                         "data": {"eval": dataset["id"]}}).status_code == 422


def test_the_artifact_listing_says_what_each_file_is_and_how_it_measured(client, tmp_path):
    from storage import jobs as job_state
    from storage.models import Model
    from tests.helpers import make_lenet_safetensors, upload
    from workers.tasks import execute

    model = upload(client, make_lenet_safetensors(tmp_path / "lenet.safetensors")).json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int4"}).json()
    rt = client.app.state.runtime
    with rt.sessions() as s:
        claimed = job_state.claim(s, job["id"], "inline")
        row = s.get(Model, claimed.model_id)
    execute(rt, claimed, row, "inline")
    listed = {a["name"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    compact = listed["model.compact.onnx"]
    assert compact["runnable"] is True and compact["runtime"] == "onnxruntime" and "InferenceSession" in compact["load"]
    assert compact["ratio"] > 7 and compact["output_max_abs_diff"] < 1e-5
    assert listed["model.mpz"]["runnable"] is False and listed["report.json"]["output_max_abs_diff"] is None
    assert listed["report.json"]["ratio"] is None   # a report is no copy of the model
    assert client.get(f"/v1/artifacts/{compact['id']}").json()["ratio"] == compact["ratio"]
    for name in ("model.onnx", "model.compact.onnx", "model.pt2", "model.compact.pt2"):   # each file timed itself
        assert listed[name]["latency_ms"] > 0 and listed[name]["latency_batch"] == 8, listed[name]
    assert listed["model.mpz"]["latency_ms"] is None
