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

from tests.client.livestack import live_stack  # noqa: F401  (module-scoped fixture)
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
    pg.on("console", lambda m: m.type == "error" and errors.append(m.text))
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
    page.click("#submit-job")
    page.wait_for_url("**/ui/#/jobs/job_*", timeout=15_000)
    job_id = page.url.rsplit("/", 1)[1]
    page.locator('#job .badge[data-status="succeeded"]').wait_for(timeout=120_000)
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
