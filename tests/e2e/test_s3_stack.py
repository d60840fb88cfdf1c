"""Workers on other hosts: the API and two worker processes share PostgreSQL, Redis and an S3 bucket (SeaweedFS)
and nothing else. Each worker has its own home and scratch folder and no blob folder; one is killed mid-training
and the other resumes the job from the checkpoint the first saved to the bucket. Downloads stream from the
bucket through the API (Range), or redirect to presigned URLs."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.conftest import settings_env
from tests.helpers import (digits_npz, download_and_check, kill_hard, start_worker, stop, upload, upload_dataset,
                           wait_finished, wait_for, wait_inspected)


@pytest.fixture
def s3_stack(s3_stack_settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    workers = []

    def spawn(name: str):
        home = tmp_path / name   # another host: its own home and scratch, the same database, broker and bucket
        settings = s3_stack_settings.model_copy(update={"home": home, "scratch_dir": home / "scratch"})
        proc = start_worker(settings_env(settings), s3_stack_settings.queue_name("cpu"), tmp_path / f"{name}.log")
        workers.append(proc)
        return proc

    with TestClient(create_app(s3_stack_settings)) as client:
        yield client, spawn
    for proc in workers:
        stop(proc)


def _checkpoints(s3_server, settings, job_id: str) -> list[str]:
    prefix = f"{settings.s3_prefix}.scratch/checkpoints/{job_id}/"
    listing = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)
    return [o["Key"][len(prefix):] for o in listing.get("Contents", [])]


def test_two_workers_sharing_only_the_database_broker_and_bucket(s3_stack, s3_stack_settings, s3_server, lenet_file,
                                                                 tmp_path):
    client, spawn = s3_stack
    hosts = {name: spawn(name) for name in ("host-a", "host-b")}
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    model = upload(client, lenet_file).json()
    train = upload_dataset(client, digits_npz(tmp_path / "digits.npz", n=400, labels=False)).json()
    stage = {"kind": "distill", "width": 0.25, "epochs": 10, "batch_size": 8, "patience": None}
    distill = client.post("/v1/jobs", json={"model_id": model["id"], "pipeline": {"stages": [stage]},
                                            "data": {"train": train["id"]}}).json()
    quick = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()
    # as soon as an epoch's checkpoint is in the bucket (saved from the worker's scratch every heartbeat)
    wait_for(client, distill["id"], lambda j: _checkpoints(s3_server, s3_stack_settings, j["id"]),
             timeout=180, interval=0.05)
    victim = _running_on(client, hosts, distill["id"])
    kill_hard(hosts[victim])   # that host dies mid-training; the other never saw its disk

    done = [wait_finished(client, job["id"], timeout=240) for job in (distill, quick)]
    logs = "".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in hosts)
    assert [j["status"] for j in done] == ["succeeded"] * 2, (done, logs)
    assert wait_inspected(client, model["id"])["inspection_status"] == "done"
    metrics = client.get(f"/v1/jobs/{distill['id']}/metrics").json()["metrics"]
    assert done[0]["attempts"] == 2 and metrics["resumed_from_checkpoints"] == ["stage-0-distill"]
    assert metrics["training_log"][0]["epoch"] >= 2 and metrics["training_log"][-1]["epoch"] == 10   # not from 1
    assert _checkpoints(s3_server, s3_stack_settings, distill["id"]) == []   # dropped once the job finished

    for job in done:
        for art in client.get(f"/v1/jobs/{job['id']}/artifacts").json():
            download_and_check(client, art)
    _check_ranges(client, client.get(f"/v1/jobs/{quick['id']}/artifacts").json()[0])
    _check_presigned(s3_stack_settings, quick["id"], tmp_path)
    assert not s3_stack_settings.resolved_storage_dir.exists()   # no blob folder anywhere
    assert not any((tmp_path / host / "blobs").exists() for host in hosts)
    survivor = next(name for name in hosts if name != victim)
    assert list((tmp_path / survivor / "scratch").glob("job_*")) == []   # each job's folder goes with it


def _running_on(client, hosts: dict, job_id: str) -> str:
    """The host whose worker runs the job: its worker id ends in the pid of a process of that host's group."""
    import os

    from storage.models import Job

    with client.app.state.runtime.sessions() as s:
        pid = int(s.get(Job, job_id).worker.rsplit(":", 1)[1])
    return next(name for name, proc in hosts.items() if os.getpgid(pid) == proc.pid)


def _check_ranges(client, art: dict) -> None:
    """Streamed from the bucket through the API: one range (206), a suffix, a range outside the file (416)."""
    whole = client.get(art["download_url"]).content
    assert hashlib.sha256(whole).hexdigest() == art["sha256"]
    part = client.get(art["download_url"], headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole)}"
    tail = client.get(art["download_url"], headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == whole[-7:]
    outside = client.get(art["download_url"], headers={"Range": f"bytes={len(whole)}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{len(whole)}"


def _check_presigned(settings, job_id: str, tmp_path) -> None:
    """MODELPRESS_S3_PRESIGN_DOWNLOADS (another API process on the same database and bucket): 307 to a
    short-lived URL, the bytes come from the store, and the Python client follows it and checks the sha256."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from mpclient import Client

    with TestClient(create_app(settings.model_copy(update={"s3_presign_downloads": 60}), run_reaper=False)) as client:
        arts = client.get(f"/v1/jobs/{job_id}/artifacts").json()
        resp = client.get(arts[0]["download_url"], follow_redirects=False)
        assert resp.status_code == 307 and resp.headers["x-checksum-sha256"] == arts[0]["sha256"]
        assert hashlib.sha256(httpx.get(resp.headers["location"]).content).hexdigest() == arts[0]["sha256"]
        with Client("http://testserver", transport=_Split(client._transport, httpx.HTTPTransport())) as c:
            paths = c.download(job_id, tmp_path / "presigned")
    assert sorted(p.name for p in paths) == sorted(a["name"] for a in arts)


class _Split(httpx.BaseTransport):
    """The API in process, the object store over the network."""

    def __init__(self, api: httpx.BaseTransport, network: httpx.BaseTransport):
        self.api, self.network = api, network

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "testserver":
            return self.network.handle_request(request)
        answer = self.api.handle_request(request)   # read whole: the test transport's stream is not httpx's sync one
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.read())
