"""Shared fixtures. Every test gets its own home folder, SQLite file, broker
folder and blob store; real-stack tests get their own PostgreSQL database and
their own Redis queue names, so tests never share state."""
from __future__ import annotations

import os
import secrets
import sys
import tempfile

# Before any project import: module-level Celery/settings objects must never
# touch the developer's real ~/.modelpress.
os.environ.setdefault("MODELPRESS_HOME", tempfile.mkdtemp(prefix="modelpress-test-home-"))
# Tests check that latency is measured, never its figures (bench/ does that): a short budget per model keeps
# every job in the suite quick. Services started by tests inherit it.
os.environ.setdefault("MODELPRESS_LATENCY_BUDGET_S", "0.05")

import pytest

from core.settings import Settings
from storage.migrate import upgrade

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("MODELPRESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MODELPRESS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for subprocesses."""
    env = {
        "MODELPRESS_HOME": str(settings.home),
        "MODELPRESS_DATABASE_URL": settings.resolved_database_url,
        "MODELPRESS_BROKER_URL": settings.resolved_broker_url,
        "MODELPRESS_STORAGE_DIR": str(settings.resolved_storage_dir),
        "MODELPRESS_QUEUE_PREFIX": settings.queue_prefix,
        "MODELPRESS_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "MODELPRESS_STALE_JOB_AFTER_S": str(settings.stale_job_after_s),
        "MODELPRESS_MAX_ATTEMPTS": str(settings.max_attempts),
        "MODELPRESS_REAPER_INTERVAL_S": str(settings.reaper_interval_s),
        "MODELPRESS_MAX_UPLOAD_BYTES": str(settings.max_upload_bytes),
        "MODELPRESS_JOB_TIME_LIMIT_S": str(settings.job_time_limit_s),
        "MODELPRESS_JOB_MEMORY_LIMIT_BYTES": str(settings.job_memory_limit_bytes),
        "MODELPRESS_AUTH_ENABLED": str(settings.auth_enabled).lower(),
    }
    return {**os.environ, **env}


@pytest.fixture
def embedded_settings(tmp_path) -> Settings:
    settings = Settings(home=tmp_path / "home", heartbeat_interval_s=0.5, stale_job_after_s=3,
                        reaper_interval_s=0.5, max_upload_bytes=20 * 1024 * 1024,
                        queue_prefix=f"mp-{secrets.token_hex(4)}")
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def client(embedded_settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(embedded_settings, run_reaper=False)) as c:
        yield c


@pytest.fixture
def lenet_file(tmp_path):
    from tests.helpers import make_lenet_safetensors

    return make_lenet_safetensors(tmp_path / "lenet.safetensors")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI=true nothing may skip: a missing package, binary or service is a failure that names it,
    so a green CI run means every test ran (pytest.skip / importorskip anywhere included)."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: tests must run, never skip: {reason}"


def _require(what: str, probe) -> None:
    try:
        probe()
    except Exception as exc:
        msg = f"{what} is not reachable ({type(exc).__name__}: {exc}); start it (see README 'Tests')"
        if IN_CI:
            pytest.fail(f"CI=true: real-stack tests must run, never skip: {msg}")
        pytest.skip(msg)


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    _require("PostgreSQL at 127.0.0.1:5432", lambda: admin.connect().close())
    name = f"mp_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url():
    import redis

    _require("Redis at 127.0.0.1:6379", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    return REDIS_URL


@pytest.fixture
def stack_settings(tmp_path, pg_url, redis_url) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=pg_url, broker_url=redis_url,
                        heartbeat_interval_s=0.5, stale_job_after_s=4, reaper_interval_s=0.5,
                        queue_prefix=f"mp-{secrets.token_hex(4)}")
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    return settings


def pytest_terminal_summary(terminalreporter):
    """The hostile-input list's tally (tests/api/hostile_inputs.py), when it ran."""
    hostile = sys.modules.get("tests.api.hostile_inputs")
    for line in hostile.report() if hostile else []:
        terminalreporter.write_line(line)
