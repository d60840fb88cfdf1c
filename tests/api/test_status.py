"""GET /v1/jobs/{id}, the route every pipeline polls: the lean read answers the same document as the full
row, with an ETag; If-None-Match answers 304 until the job changes."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.documents import JobOut
from storage import jobs as job_state
from storage.models import Job, JobStatus
from tests.helpers import upload


@pytest.fixture(params=["embedded", "stack"])
def any_settings(request):
    return request.getfixturevalue("embedded_settings" if request.param == "embedded" else "stack_settings")


def test_the_lean_read_answers_the_full_document(any_settings, lenet_file):
    with TestClient(create_app(any_settings, run_reaper=False)) as client:
        model = upload(client, lenet_file).json()
        job_id = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"]
        rt = client.app.state.runtime
        quality = {"metric": "cosine", "value": 0.99, "passed": True}
        with rt.sessions() as s:
            job_state.claim(s, job_id, "w1")
            job_state.finish(s, job_id, "w1", JobStatus.succeeded,
                             metrics={"quality": quality, "layers": [{"i": i} for i in range(500)]})
            row = s.get(Job, job_id)
            row.callback_url, row.callback_status = "https://hooks.example.com/x", "delivered"
            row.callback_log = [{"attempt": 1, "at": "2026-01-01T00:00:00+00:00", "duration_ms": 3.0,
                                                "status_code": 204}]
            s.commit()
            full = JobOut.model_validate(s.get(Job, job_id)).model_dump(mode="json")
        got = client.get(f"/v1/jobs/{job_id}").json()
        assert got == full and got["quality"] == quality and got["callback"]["deliveries"][0]["status_code"] == 204


def test_etag_and_if_none_match(client, lenet_file):
    model = upload(client, lenet_file).json()
    job_id = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"]
    first = client.get(f"/v1/jobs/{job_id}")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and "no-cache" in first.headers["cache-control"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": sent})
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag, sent
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": '"stale"'}).status_code == 200
    client.post(f"/v1/jobs/{job_id}/cancel")
    changed = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled" and changed.headers["etag"] != etag
    assert client.get("/v1/jobs/job_unknown", headers={"If-None-Match": "*"}).status_code == 404


def test_several_api_processes_keep_tcp_nodelay():
    """uvicorn's multi-process socket says protocol 0, and asyncio then leaves Nagle on: every keep-alive
    answer waited ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149)."""
    import asyncio
    import socket

    from api.serving import TcpConfig

    listener = TcpConfig("api.app:create_app", factory=True, host="127.0.0.1", port=0, workers=2).bind_socket()

    async def accepted_nodelay() -> int:
        seen = asyncio.get_running_loop().create_future()

        def on_connect(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
        server = await asyncio.start_server(on_connect, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(accepted_nodelay())


def test_a_poll_after_the_database_dropped_its_connections_still_answers(stack_settings, lenet_file):
    """Status reads skip the ping before each read (api/reads.py): a dropped connection is retried once."""
    import sqlalchemy as sa

    with TestClient(create_app(stack_settings, run_reaper=False)) as client:
        model = upload(client, lenet_file).json()
        job_id = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8"}).json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200   # a pooled connection now exists
        base, dbname = stack_settings.database_url.rsplit("/", 1)
        admin = sa.create_engine(f"{base}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                        "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": dbname}).scalar()
        admin.dispose()
        assert [client.get(f"/v1/jobs/{job_id}").status_code for _ in range(3)] == [200] * 3
