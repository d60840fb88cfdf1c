"""The real stack behind a real HTTP server: PostgreSQL + Redis + a real Celery worker
process, and the API served by uvicorn in a thread on a free loopback port.
One stack per test module (started once) keeps these tests fast."""
from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from tests.conftest import PG_ADMIN_URL, REDIS_URL, _require, settings_env
from tests.helpers import start_worker, stop


@dataclass
class LiveStack:
    url: str
    settings: Settings
    env: dict
    home: Path
    worker_log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory):
    import redis
    import sqlalchemy as sa

    from api.app import create_app
    from storage.migrate import upgrade

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    _require("PostgreSQL at 127.0.0.1:5432", lambda: admin.connect().close())
    _require("Redis at 127.0.0.1:6379", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    name = f"mp_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    tmp = tmp_path_factory.mktemp("live")
    settings = Settings(home=tmp / "home", database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
                        broker_url=REDIS_URL, heartbeat_interval_s=0.5, stale_job_after_s=4,
                        reaper_interval_s=0.5, queue_prefix=f"mp-{secrets.token_hex(4)}")
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    env = settings_env(settings)
    worker = start_worker(env, settings.queue_name("cpu"), tmp / "worker.log")
    port = free_port()
    server, thread = _serve(create_app(settings), port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        yield LiveStack(url=url, settings=settings, env=env, home=tmp, worker_log=tmp / "worker.log")
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        stop(worker)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class AuthServer:
    url: str
    key_a: str
    key_b: str


@pytest.fixture
def auth_server(tmp_path):
    """The embedded default (SQLite, no worker: jobs stay queued) with authentication on,
    served over real HTTP; two tenants' keys."""
    from api.app import create_app
    from storage.keys import create_key
    from storage.migrate import upgrade

    settings = Settings(home=tmp_path / "home", auth_enabled=True, queue_prefix=f"mp-{secrets.token_hex(4)}")
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    app = create_app(settings, run_reaper=False)
    with app.state.runtime.sessions() as session:
        _, key_a = create_key(session, "tenant-a", "test a")
        _, key_b = create_key(session, "tenant-b", "test b")
    server, thread = _serve(app, free_port())
    try:
        yield AuthServer(url=f"http://127.0.0.1:{server.config.port}", key_a=key_a, key_b=key_b)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
