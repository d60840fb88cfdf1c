"""The embedded default, started exactly as the README says: `modelpress up`."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import (CONV_ONLY, download_and_check, reload_container_and_check, upload, wait_finished,
                           wait_inspected)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPRESS_")}
    env["MODELPRESS_HOME"] = str(tmp_path / "home")
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((tmp_path / "up.log").read_text())
        time.sleep(0.2)
    yield client, tmp_path
    client.close()
    proc.terminate()  # as a user's Ctrl-C / service manager would: `up` stops its worker itself
    proc.wait(timeout=60)
    try:
        _wait_group_gone(proc.pid, timeout=30)
    finally:
        _kill_group(proc.pid)
        log.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("`modelpress up` left its worker running after it stopped")


def test_embedded_end_to_end(service, lenet_file):
    client, tmp_path = service
    assert (tmp_path / "home" / "modelpress.db").exists()
    model = upload(client, lenet_file)
    assert model.status_code == 201, model.text
    job = client.post("/v1/jobs", json={"model_id": model.json()["id"], "recipe": "int8"},
                      headers={"Idempotency-Key": "readme-1"}).json()
    done = wait_finished(client, job["id"], timeout=180)
    assert done["status"] == "succeeded", (done, (tmp_path / "up.log").read_text()[-3000:])
    artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert {a["kind"] for a in artifacts} >= {"container", "safetensors"}
    container = next(a for a in artifacts if a["kind"] == "container")
    path = tmp_path / container["name"]
    path.write_bytes(download_and_check(client, container))
    reload_container_and_check(path)


def test_embedded_upload_is_inspected_by_the_worker(service, lenet_file):
    """No Redis: the inspection travels through the embedded broker to the worker `up` started."""
    client, tmp_path = service
    model = upload(client, lenet_file).json()
    inspected = wait_inspected(client, model["id"], timeout=120)
    assert inspected["inspection_status"] == "done", (inspected, (tmp_path / "up.log").read_text()[-3000:])
    assert inspected["summary"]["inspection"]["layers_by_type"]["Linear"]["count"] == 3
    resp = client.post("/v1/jobs", json={"model_id": model["id"], "pipeline": CONV_ONLY})
    assert resp.status_code == 422 and "no such layer" in resp.text
