"""The embedded default, started exactly as the README says: `modelpress up`."""
from __future__ import annotations

from tests.helpers import (CONV_ONLY, download_and_check, reload_container_and_check, upload, wait_finished,
                           wait_inspected)


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
