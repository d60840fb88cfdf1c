"""The dashboard in a real browser (Debian's Chromium driven by Python playwright) against
the real stack: drag-and-drop upload, the int8 preset, live status, charts, a verified
download, a stage form generated from the method schemas, a failure in plain words,
phone width."""
from __future__ import annotations

import base64
import hashlib
import os
import shutil

import httpx
import pytest
import torch

from mpclient import Client
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
def page(browser, tmp_path):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # 401s are expected before the API key is set; the browser logs each failed fetch.
    pg.on("console", lambda m: m.type == "error" and "status of 401" not in m.text and errors.append(m.text))
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
    assert page.locator("#upload .progress").get_attribute("aria-valuenow") == "100"
    page.screenshot(path=str(shots / "1-uploaded.png"), full_page=True)

    assert page.input_value("#recipe") == "int8"
    assert page.input_value("#model").startswith("mdl_")
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

    # phone width: no sideways scrolling
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_stack.url}/ui/#/jobs/{job_id}")
    page.locator("#charts svg").first.wait_for(timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    page.screenshot(path=str(shots / "3-phone.png"), full_page=True)
    print(f"screenshots in {shots}")


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
    failure = page.locator("#failure")
    failure.wait_for(timeout=60_000)
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
