"""Retry logic against a local HTTP server that answers 503 first, then 200."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpclient import ApiError, ChecksumMismatch, Client, ConnectionFailed
from mpclient.cli import main as cli_main
from tests.client.livestack import free_port

JOB = {"id": "job_1", "model_id": "mdl_1", "status": "queued", "recipe": "int8", "pipeline": {}, "queue": "q",
       "stage": None, "progress": 0.0, "error": None, "attempts": 0, "cancel_requested": False,
       "created_at": "2026-01-01T00:00:00+00:00", "started_at": None, "finished_at": None}


class Flaky:
    """Each path fails with 503 `fail` times, then answers 200/201."""

    def __init__(self, fail: int = 2):
        self.fail, self.seen, self.keys = fail, {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, status, body: bytes, headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                n = outer.seen[(self.command, self.path)] = outer.seen.get((self.command, self.path), 0) + 1
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.keys.append(self.headers.get("idempotency-key"))
                if n <= outer.fail:
                    return self._answer(503, b'{"detail": "the database is unavailable; retry shortly"}',
                                        {"Retry-After": "0", "Content-Type": "application/json"})
                if self.path.startswith("/v1/artifacts/art_bad/download"):
                    return self._answer(200, b"payload", {"X-Checksum-SHA256": "0" * 64})
                if self.path.startswith("/v1/artifacts/art_ok/download"):
                    return self._answer(200, b"payload",
                                        {"X-Checksum-SHA256": hashlib.sha256(b"payload").hexdigest()})
                status = 201 if self.command == "POST" else 200
                self._answer(status, json.dumps(JOB).encode(), {"Content-Type": "application/json"})

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    srv = Flaky(fail=2)
    yield srv
    srv.close()


def fast(url, **kw) -> Client:
    return Client(url, backoff=0.01, max_backoff=0.05, **kw)


def test_get_is_retried_on_503_then_succeeds(flaky):
    with fast(flaky.url) as c:
        job = c.job("job_1")
    assert job.id == "job_1" and job.status == "queued" and job.created_at.year == 2026
    assert flaky.seen[("GET", "/v1/jobs/job_1")] == 3


def test_submit_is_retried_with_the_same_idempotency_key(flaky):
    with fast(flaky.url) as c:
        job = c.submit("mdl_1", recipe="int8")
    assert job.id == "job_1"
    assert flaky.seen[("POST", "/v1/jobs")] == 3
    keys = [k for k in flaky.keys if k]
    assert len(keys) == 3 and len(set(keys)) == 1


def test_cancel_is_not_retried_on_503(flaky):
    with fast(flaky.url) as c, pytest.raises(ApiError) as err:
        c.cancel("job_1")
    assert err.value.status == 503 and "unavailable" in err.value.message
    assert flaky.seen[("POST", "/v1/jobs/job_1/cancel")] == 1


def test_gives_up_after_the_retry_budget():
    srv = Flaky(fail=100)
    try:
        with fast(srv.url, retries=3) as c, pytest.raises(ApiError) as err:
            c.job("job_1")
        assert err.value.status == 503
        assert srv.seen[("GET", "/v1/jobs/job_1")] == 4
    finally:
        srv.close()


def test_connection_errors_are_retried_then_raised():
    port = free_port()  # nothing listens there
    with fast(f"http://127.0.0.1:{port}", retries=2) as c, pytest.raises(ConnectionFailed):
        c.job("job_1")


def test_api_key_is_sent_as_bearer(flaky):
    seen = {}
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, json=JOB)

    with Client("http://mp.test", api_key="mp_secret", transport=httpx.MockTransport(handler)) as c:
        c.job("job_1")
    assert seen["auth"] == "Bearer mp_secret"


def test_download_checksum_mismatch_leaves_no_file(flaky, tmp_path):
    flaky.fail = 0
    from mpclient import Artifact

    ok = Artifact(id="art_ok", job_id="job_1", name="a.bin", kind="x", size_bytes=7,
                  sha256=hashlib.sha256(b"payload").hexdigest())
    bad = Artifact(id="art_bad", job_id="job_1", name="b.bin", kind="x", size_bytes=7, sha256="0" * 64)
    with fast(flaky.url) as c:
        [path] = c.download(ok, tmp_path)
        assert path.read_bytes() == b"payload"
        with pytest.raises(ChecksumMismatch):
            c.download(bad, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_cli_exit_codes_for_usage_and_connection_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELPRESS_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["submit", str(tmp_path / "missing.safetensors"), "--recipe", "int8", "--url", url]) == 2
    assert cli_main(["jobs", "--url", url, "--json"]) == 3
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]["status"] is None
    with pytest.raises(SystemExit) as exc:
        cli_main(["jobs", "--status", "bogus"])
    assert exc.value.code == 2
