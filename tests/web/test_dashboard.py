"""The dashboard in a real browser (Debian's Chromium driven by Python playwright) against
the real stack: drag-and-drop upload, the int8 preset, live status, charts, a verified
download, a stage form generated from the method schemas, a failure in plain words,
phone width; datasets (upload, list, delete, a 409 in words), a finetune job on one, its
training log and evaluation, live training progress."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

import httpx
import pytest
import torch

from mpclient import Client
from tests.helpers import upload, wait_finished
from tests.client.livestack import auth_server, live_stack  # noqa: F401  (fixtures)
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("MODELPRESS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need(ok: bool, msg: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI=true: the browser test must run, never skip: {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "python playwright is not installed (pip install playwright)")
    _need(os.path.exists(CHROMIUM) or shutil.which("chromium") is not None,
          f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                               args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def http_errors_expected() -> set[int]:
    """HTTP statuses a test provokes on purpose (the browser logs each failed request as an error)."""
    return {401}   # expected before the API key is set


@pytest.fixture
def page(browser, tmp_path, http_errors_expected):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))

    def on_console(m) -> None:
        if m.type == "error" and not any(f"status of {code} " in m.text for code in http_errors_expected):
            errors.append(m.text)

    pg.on("console", on_console)
    yield pg
    ctx.close()
    assert not errors, errors


def _drop_file(page, selector: str, path) -> None:
    data = base64.b64encode(path.read_bytes()).decode()
    dt = page.evaluate_handle("""([b64, name]) => {
        const raw = atob(b64); const bytes = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "application/octet-stream"}));
        return dt;
    }""", [data, path.name])
    page.dispatch_event(selector, "dragover", {"dataTransfer": dt})
    page.dispatch_event(selector, "drop", {"dataTransfer": dt})


def test_upload_int8_charts_download(page, live_stack, lenet_file, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page.goto(live_stack.url + "/")
    assert page.url.endswith("/ui/")
    page.fill("#architecture", "lenet-300-100")
    _drop_file(page, "#dropzone", lenet_file)
    summary = page.locator("#model-summary")
    summary.wait_for(timeout=30_000)
    assert "266,610" in summary.inner_text() and "safetensors" in summary.inner_text()
    used = page.locator("#sample-inputs")   # after the worker's inspection: what it will feed the model
    used.wait_for(timeout=60_000)
    assert "[8, 1, 28, 28] float32" in used.inner_text(), used.inner_text()
    assert page.locator("#upload .progress").get_attribute("aria-valuenow") == "100"
    page.screenshot(path=str(shots / "1-uploaded.png"), full_page=True)

    assert page.input_value("#recipe") == "int8"
    # the form refreshes its model list after the upload (asynchronously): the new model gets selected
    page.wait_for_function("() => document.querySelector('#model').value.startsWith('mdl_')", timeout=15_000)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/v1/jobs/job_" in r.url and r.method == "GET" else None)
    page.click("#submit-job")
    page.wait_for_url("**/ui/#/jobs/job_*", timeout=15_000)
    job_id = page.url.rsplit("/", 1)[1]
    page.locator('#job .badge[data-status="succeeded"]').wait_for(timeout=120_000)
    # live through EventSource, not polling: one GET of the job, one event stream
    assert sum(u.endswith(f"/v1/jobs/{job_id}") for u in polls) == 1, polls
    assert sum(u.endswith(f"/v1/jobs/{job_id}/events") for u in polls) >= 1, polls
    page.locator("#charts svg").first.wait_for(timeout=15_000)
    for chart in ("#chart-size", "#chart-fidelity", "#chart-bits"):
        assert page.locator(f"{chart} svg rect").count() >= 1, chart
    assert "×" in page.locator("#metrics").inner_text()
    assert "null" not in page.locator("main").inner_text()
    verdict = page.locator("#quality")   # the job's quality verdict, with what it was measured on
    assert "Quality" in verdict.inner_text() and "random inputs" in verdict.inner_text()
    page.screenshot(path=str(shots / "2-job-succeeded.png"), full_page=True)

    arts = httpx.get(f"{live_stack.url}/v1/jobs/{job_id}/artifacts").json()
    container = next(a for a in arts if a["kind"] == "container")
    with page.expect_download(timeout=30_000) as dl_info:
        page.click(f'button.download[data-artifact="{container["id"]}"]')
    dl = dl_info.value
    target = tmp_path / dl.suggested_filename
    dl.save_as(str(target))
    assert dl.suggested_filename == container["name"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == container["sha256"]
    page.get_by_text("sha256 verified").first.wait_for(timeout=10_000)

    # jobs list with the status filter
    page.goto(live_stack.url + "/ui/#/")
    page.select_option("#status-filter", "succeeded")
    page.locator(f'tr[data-job="{job_id}"] .badge[data-status="succeeded"]').wait_for(timeout=10_000)

    # the storage bar counts the upload and the artifacts
    usage = page.locator("#usage .progress")
    usage.wait_for(timeout=10_000)
    assert "models" in usage.inner_text() and "artifacts" in usage.inner_text()

    # phone width: no sideways scrolling
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_stack.url}/ui/#/jobs/{job_id}")
    page.locator("#charts svg").first.wait_for(timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    page.screenshot(path=str(shots / "3-phone.png"), full_page=True)
    print(f"screenshots in {shots}")

    # delete one artifact, then the job, each after a confirmation
    row = page.locator(f'tr[data-artifact="{container["id"]}"]')
    row.locator("button.delete").click()
    row.locator("button.confirm-delete").click()
    row.wait_for(state="detached", timeout=10_000)
    assert httpx.get(f"{live_stack.url}/v1/artifacts/{container['id']}").status_code == 404
    page.click("#job-delete button.delete")
    page.click("#job-delete button.confirm-delete")
    page.wait_for_url(lambda url: url.endswith("/ui/#/"), timeout=10_000)
    assert httpx.get(f"{live_stack.url}/v1/jobs/{job_id}").status_code == 404


def test_an_upload_the_service_cannot_use_says_so_with_the_fix(page, live_stack, tmp_path):
    path = tmp_path / "tiny.ts"   # TorchScript without an input shape: inspection cannot build inputs
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()), str(path))
    page.goto(live_stack.url + "/ui/")
    page.set_input_files("#file", str(path))
    refused = page.locator("#inspection .failure")
    refused.wait_for(timeout=60_000)
    assert "cannot use this model" in refused.inner_text() and '"input_shape"' in refused.inner_text()

    page.fill("#options", '{"input_shape": [2, 8]}')   # the fix, as the message gives it
    page.set_input_files("#file", str(path))
    used = page.locator("#sample-inputs")
    used.wait_for(timeout=60_000)
    assert "[2, 8] float32" in used.inner_text(), used.inner_text()


def test_stage_forms_and_failure_in_plain_words(page, live_stack, tmp_path):
    # a TorchScript model uploaded without an input shape: its job fails
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(8, 4)).eval())
    path = tmp_path / "tiny.ts"
    torch.jit.save(scripted, str(path))
    page.goto(live_stack.url + "/ui/")
    page.set_input_files("#file", str(path))
    page.locator("#model-summary").wait_for(timeout=30_000)

    # compose a custom pipeline from the schema-generated form
    page.check("#mode-custom")
    page.select_option("#add-kind", "quantize")
    page.click("#add-stage")
    stage = page.locator('fieldset.stage[data-kind="quantize"]')
    dtype = stage.locator('select[name="dtype"]')
    assert "int4" in dtype.inner_text()
    assert "integer codes" in stage.inner_text()  # the schema's description as help text
    dtype.select_option("int4")
    page.click("#submit-job")
    page.wait_for_url("**/ui/#/jobs/job_*", timeout=15_000)
    job_id = page.url.rsplit("/", 1)[1]
    job = httpx.get(f"{live_stack.url}/v1/jobs/{job_id}").json()
    assert job["pipeline"]["stages"][0]["dtype"] == "int4" and job["recipe"] is None
    with httpx.Client(base_url=live_stack.url) as api:   # the worker's verdict first, then what the page says
        done = wait_finished(api, job_id, timeout=180)
    assert done["status"] == "failed", (done, live_stack.worker_log.read_text()[-3000:])
    failure = page.locator("#failure")
    failure.wait_for(timeout=30_000)
    assert "input shape" in failure.inner_text()
    page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)


def test_api_key_field_and_live_updates_with_auth(page, auth_server, lenet_file):
    """With auth on, the key from the dashboard's field (localStorage) is sent on every call,
    including the event stream (a streamed fetch, since EventSource cannot send headers)."""
    with Client(auth_server.url, api_key=auth_server.key_a) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        job = c.submit(model.id, recipe="int8")  # no worker here: it stays queued
    page.goto(auth_server.url + "/ui/")
    page.locator("#jobs .error").wait_for(timeout=10_000)
    assert "API key" in page.locator("#jobs .error").inner_text()
    page.click(".key summary")
    page.fill("#api-key", auth_server.key_a)
    page.click("#save-key")
    page.locator(f'tr[data-job="{job.id}"] .badge[data-status="queued"]').wait_for(timeout=10_000)
    assert page.evaluate("localStorage.getItem('modelpress.apiKey')") == auth_server.key_a

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if f"/v1/jobs/{job.id}" in r.url else None)
    page.goto(f"{auth_server.url}/ui/#/jobs/{job.id}")
    page.locator('#job .badge[data-status="queued"]').wait_for(timeout=10_000)
    page.wait_for_timeout(700)
    with Client(auth_server.url, api_key=auth_server.key_a) as c:
        c.cancel(job.id)  # from outside the page: the stream must bring the change
    page.locator('#job .badge[data-status="cancelled"]').wait_for(timeout=10_000)
    assert sum(u.endswith(f"/v1/jobs/{job.id}") for u in requests) == 1, requests
    assert any(u.endswith("/events") for u in requests)


def _mnist_like_npz(path, n: int = 32):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(path, inputs=rng.random((n, 784), dtype=np.float32), labels=(np.arange(n) % 10).astype(np.int64))
    return path


def test_dataset_upload_and_finetune_job(page, live_stack, lenet_file, tmp_path, http_errors_expected):
    http_errors_expected.add(415)
    page.goto(live_stack.url + "/ui/#/datasets")
    # a pickle is refused with the server's words
    bogus = tmp_path / "bogus.pt"
    torch.save({"x": torch.zeros(2)}, str(bogus))
    page.set_input_files("#dataset-file", str(bogus))
    page.locator("#dataset-status .error").wait_for(timeout=15_000)
    assert "HTTP 415" in page.locator("#dataset-status .error").inner_text()

    path = _mnist_like_npz(tmp_path / "digits32.npz")
    _drop_file(page, "#dataset-dropzone", path)
    page.locator("#dataset-status .ok").wait_for(timeout=15_000)
    assert page.locator("#dataset-upload .progress").get_attribute("aria-valuenow") == "100"
    row = page.locator("#datasets tr[data-dataset]", has_text="digits32.npz")
    row.wait_for(timeout=10_000)
    ds_id = row.get_attribute("data-dataset")
    assert row.locator("td.samples").inner_text() == "32"
    assert "[784]" in row.locator("td.shapes").inner_text()
    assert "10 classes" in row.inner_text() and "npz" in row.inner_text()
    assert httpx.get(f"{live_stack.url}/v1/datasets/{ds_id}").json()["summary"]["samples"] == 32

    with httpx.Client(base_url=live_stack.url) as http:
        model_id = upload(http, lenet_file).json()["id"]
    page.goto(live_stack.url + "/ui/#/")
    page.locator(f'#model option[value="{model_id}"]').wait_for(state="attached", timeout=10_000)
    page.select_option("#model", model_id)
    page.check("#mode-custom")
    page.select_option("#add-kind", "finetune")
    page.click("#add-stage")
    page.locator('fieldset.stage[data-kind="finetune"] input[name="epochs"]').fill("2")
    assert "32 samples" in page.locator(f'#data-train option[value="{ds_id}"]').inner_text()
    page.select_option("#data-train", ds_id)
    page.select_option("#data-eval", ds_id)
    page.click("#submit-job")
    page.wait_for_url("**/ui/#/jobs/job_*", timeout=15_000)
    job_id = page.url.rsplit("/", 1)[1]
    job = httpx.get(f"{live_stack.url}/v1/jobs/{job_id}").json()
    assert job["data"] == {"train": ds_id, "eval": ds_id}
    assert job["pipeline"]["stages"][0]["kind"] == "finetune" and job["pipeline"]["stages"][0]["epochs"] == 2

    page.locator('#job .badge[data-status="succeeded"]').wait_for(timeout=120_000)
    assert ds_id in page.locator("#job-data").inner_text()
    page.locator("#training-log").wait_for(timeout=15_000)
    log_rows = page.locator("#training-log tbody tr")
    assert log_rows.count() == 2 and "2/2" in log_rows.nth(1).inner_text()
    assert page.locator("#chart-loss svg polyline").count() == 1
    evaluation = page.locator("#evaluation-table tbody tr")
    assert evaluation.count() == 2 and "original" in evaluation.nth(0).inner_text()
    assert "Top-1" in page.locator("#evaluation-table thead").text_content()
    # the last training record stays on the finished job
    assert "epoch 2/2" in page.locator("#train-detail").inner_text()
    page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)

    # the job builder without a role chosen sends no `data`
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/jobs") and r.method == "POST" else None)
    page.goto(live_stack.url + "/ui/#/")
    page.locator(f'#model option[value="{model_id}"]').wait_for(state="attached", timeout=10_000)
    page.select_option("#model", model_id)
    page.click("#submit-job")
    page.wait_for_url("**/ui/#/jobs/job_*", timeout=15_000)
    assert sent and "data" not in sent[0], sent


def test_delete_dataset_and_conflict_in_words(page, auth_server, lenet_file, tmp_path, http_errors_expected):
    http_errors_expected.add(409)
    with Client(auth_server.url, api_key=auth_server.key_a) as c:
        free = c.upload_dataset(_mnist_like_npz(tmp_path / "free.npz"))
        busy = c.upload_dataset(_mnist_like_npz(tmp_path / "busy.npz"))
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        # no worker here: the job stays queued and holds on to its dataset
        job = c.submit(model.id, pipeline={"stages": [{"kind": "finetune", "epochs": 1}]}, data={"train": busy.id})
    page.add_init_script(f"localStorage.setItem('modelpress.apiKey', {json.dumps(auth_server.key_a)})")
    page.goto(auth_server.url + "/ui/#/datasets")

    def delete(ds_id: str) -> None:
        row = page.locator(f'#datasets tr[data-dataset="{ds_id}"]')
        row.locator("button.delete").click()
        row.locator("button.confirm-delete").click()

    page.locator(f'#datasets tr[data-dataset="{free.id}"]').wait_for(timeout=10_000)
    delete(free.id)
    page.locator(f'#datasets tr[data-dataset="{free.id}"]').wait_for(state="detached", timeout=10_000)
    headers = {"Authorization": f"Bearer {auth_server.key_a}"}
    assert httpx.get(f"{auth_server.url}/v1/datasets/{free.id}", headers=headers).status_code == 404

    delete(busy.id)
    error = page.locator("#datasets-message .error")
    error.wait_for(timeout=10_000)
    assert "HTTP 409" in error.inner_text() and job.id in error.inner_text()
    assert page.locator(f'#datasets tr[data-dataset="{busy.id}"] button.delete').is_visible()

    with Client(auth_server.url, api_key=auth_server.key_a) as c:
        c.cancel(job.id)
    delete(busy.id)
    page.locator(f'#datasets tr[data-dataset="{busy.id}"]').wait_for(state="detached", timeout=10_000)
    assert "No datasets yet" in page.locator("#datasets").inner_text()
    assert not error.is_visible()


def _fake_job(status: str, **extra) -> dict:
    return {"id": "job_fake", "model_id": "mdl_fake", "status": status, "recipe": None,
            "pipeline": {"stages": [{"kind": "prune", "sparsity": 0.5}, {"kind": "finetune", "epochs": 10}]},
            "queue": "cpu", "data": {"train": "ds_t", "eval": "ds_e"}, "stage": "finetune", "progress": 0.6,
            "progress_detail": None, "error": None, "attempts": 1, "cancel_requested": False,
            "created_at": "2024-01-01T00:00:00+00:00", "started_at": "2024-01-01T00:00:01+00:00",
            "finished_at": None, **extra}


def test_training_progress_and_metrics_tables(page, live_stack):
    """The job page from canned API answers: the epoch line from progress_detail (first GET, then the
    event stream), then a finished job's training log, loss chart and evaluation table."""
    detail = {"stage": "finetune", "stage_index": 1, "epoch": 3, "epochs": 10, "step": 400, "loss": 0.02}
    later = {**detail, "epoch": 4, "step": 420, "loss": 0.0123, "eval": {"score": 0.95, "top1": 0.95, "cosine": 0.99}}
    running = _fake_job("running", progress_detail=detail)
    stream = (f"event: job\ndata: {json.dumps(running)}\n\n"
              f"event: job\ndata: {json.dumps({**running, 'progress': 0.7, 'progress_detail': later})}\n\n"
              "event: end\ndata: {}\n\n")

    def fulfil(body, content_type="application/json"):
        return lambda route: route.fulfill(status=200, content_type=content_type,
                                           body=body if isinstance(body, str) else json.dumps(body))

    page.route("**/v1/jobs/job_fake", fulfil(running))
    page.route("**/v1/jobs/job_fake/events", fulfil(stream, "text/event-stream"))
    page.goto(live_stack.url + "/ui/#/jobs/job_fake")
    line = page.locator("#train-detail")
    page.wait_for_function("document.querySelector('#train-detail')?.textContent.includes('epoch 4/10')", timeout=10_000)
    assert line.inner_text() == "finetune (stage 1): epoch 4/10 · step 420 · loss 0.0123 · eval score 0.95"
    assert "train ds_t" in page.locator("#job-data").inner_text()

    log = [{"stage_index": 1, "stage": "finetune", "epoch": e, "epochs": 3, "step": 10 * e, "loss": 1.0 / e,
            "eval": {"score": 0.8 + e / 100, "top1": 0.8 + e / 100}} for e in (1, 2, 3)]
    evaluation = [{"after_stage": None, "kind": None, "score": 0.97, "top1": 0.97, "cosine": 1.0, "samples": 32},
                  {"after_stage": 0, "kind": "prune", "score": 0.71, "top1": 0.71, "cosine": 0.9, "samples": 32},
                  {"after_stage": 1, "kind": "finetune", "score": 0.83, "top1": 0.83, "cosine": 0.95, "samples": 32}]
    done = _fake_job("succeeded", progress=1.0, stage=None, progress_detail=log[-1],
                     finished_at="2024-01-01T00:01:00+00:00")
    page.unroute("**/v1/jobs/job_fake")
    page.route("**/v1/jobs/job_fake", fulfil(done))
    page.route("**/v1/jobs/job_fake/metrics", fulfil({"job_id": "job_fake", "status": "succeeded", "metrics": {
        "size_bytes_before": 1000, "size_bytes_after": 500, "training_log": log, "evaluation": evaluation}}))
    page.route("**/v1/jobs/job_fake/artifacts", fulfil([]))
    page.goto(live_stack.url + "/ui/#/")
    page.goto(live_stack.url + "/ui/#/jobs/job_fake")
    page.locator("#training-log").wait_for(timeout=10_000)
    assert page.locator("#training-log tbody tr").count() == 3
    assert "1/3" in page.locator("#training-log tbody tr").first.inner_text()
    assert page.locator("#chart-loss svg circle").count() == 3
    rows = page.locator("#evaluation-table tbody tr")
    assert rows.count() == 3
    assert "stage 0 · prune" in rows.nth(1).inner_text() and "-0.26" in rows.nth(1).inner_text()
    assert "last finetune (stage 1) epoch: epoch 3/3" in page.locator("#train-detail").inner_text()
    assert "null" not in page.locator("main").inner_text()


def test_datasets_pagination(page, live_stack):
    """Pages of 20 from canned answers: Next asks for next_offset, Previous goes back."""
    asked: list[int] = []

    def answer(route):
        offset = int(route.request.url.split("offset=")[1].split("&")[0])
        asked.append(offset)
        items = [{"id": f"ds_{i:04d}", "filename": f"d{i}.npz", "format": "npz", "size_bytes": 1000 + i, "sha256": "0" * 64,
                  "summary": {"samples": i + 1, "inputs": [{"name": "inputs", "shape": [4], "dtype": "float32"}],
                              "labels": None}, "created_at": "2024-01-01T00:00:00+00:00"}
                 for i in range(offset, min(offset + 20, 45))]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(
            {"items": items, "total": 45, "limit": 20, "offset": offset,
             "next_offset": offset + 20 if offset + 20 < 45 else None}))

    page.route("**/v1/datasets?*", answer)
    page.goto(live_stack.url + "/ui/#/datasets")
    page.locator('tr[data-dataset="ds_0000"]').wait_for(timeout=10_000)
    assert page.is_disabled("#datasets-prev") and "1–20 of 45" in page.locator(".pager").inner_text()
    page.click("#datasets-next")
    page.locator('tr[data-dataset="ds_0020"]').wait_for(timeout=10_000)
    page.click("#datasets-next")
    page.locator('tr[data-dataset="ds_0044"]').wait_for(timeout=10_000)
    assert page.is_disabled("#datasets-next") and "41–45 of 45" in page.locator(".pager").inner_text()
    assert "none" in page.locator('tr[data-dataset="ds_0044"]').inner_text()   # no labels
    page.click("#datasets-prev")
    page.locator('tr[data-dataset="ds_0020"]').wait_for(timeout=10_000)
    assert asked == [0, 20, 40, 20], asked


def test_goal_job_page_shows_the_outcome_and_the_candidates(page, live_stack, lenet_file, tmp_path):
    from tests.helpers import digits_npz

    with Client(live_stack.url) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        data = c.upload_dataset(digits_npz(tmp_path / "d.npz", n=128, labels=False))
        job = c.submit(model.id, goal={"target": {"ratio": 6}, "constraint": {"metric": "cosine", "min": 0.9}},
                       data={"calibration": data.id})
        job = c.wait(job.id, timeout=300)
    assert job.status == "succeeded", job.error
    page.goto(live_stack.url + f"/ui/#/jobs/{job.id}")
    summary = page.locator("#goal-summary")
    summary.wait_for(timeout=30_000)
    assert "Goal met" in summary.inner_text() and "goal met: " in summary.inner_text()
    assert "goal: 6× smaller at cosine ≥ 0.9" in page.locator("main").inner_text()
    assert page.locator("#goal svg circle").count() >= 10
    assert page.locator("#goal-table tbody tr").count() >= 10 and "(chosen)" in page.locator("#goal-table").inner_text()
    assert page.locator("#sensitivity-table tbody tr").count() == 3   # fc1, fc2, fc3 at int8/int4/int3
    # another measured point, without a new search (candidates far over the size have no button)
    page.locator("button.build-candidate:not([disabled])").first.click()
    page.wait_for_url(lambda url: "/jobs/job_" in url and job.id not in url, timeout=15_000)
    page.locator('#job .badge[data-status="succeeded"]').wait_for(timeout=120_000)
    assert "custom pipeline: " in page.locator("main").inner_text()
    page.screenshot(path=str(tmp_path / "goal.png"), full_page=True)


def test_analyze_job_page_shows_which_layer_breaks(page, live_stack, lenet_file, tmp_path):
    from tests.helpers import digits_npz

    with Client(live_stack.url) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        data = c.upload_dataset(digits_npz(tmp_path / "d.npz", n=64))
        job = c.wait(c.submit(model.id, analyze={}, data={"eval": data.id}).id, timeout=300)
    assert job.status == "succeeded", job.error
    page.goto(live_stack.url + f"/ui/#/jobs/{job.id}")
    summary = page.locator("#analyze-summary")
    summary.wait_for(timeout=30_000)
    assert "3 layers measured on 64 samples of the eval data (top1)" in summary.inner_text()
    assert page.locator("#sensitivity-table tbody tr").count() == 3
    assert "null" not in page.locator("main").inner_text() and "undefined" not in page.locator("main").inner_text()
