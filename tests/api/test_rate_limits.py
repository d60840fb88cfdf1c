"""Per-tenant request rates: in this process's memory for the embedded default, in Redis (shared by every
API process) when the service has one; 429 with Retry-After either way."""
from __future__ import annotations

import secrets

from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from storage.migrate import upgrade


def _settings(tmp_path, **values) -> Settings:
    settings = Settings(home=tmp_path / "home", queue_prefix=f"mp-{secrets.token_hex(4)}",
                        tenant_requests_per_minute=5, **values)
    settings.home.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    return settings


def _codes(client, n: int) -> list[int]:
    return [client.get("/v1/jobs").status_code for _ in range(n)]


def test_embedded_default_counts_in_memory_per_process(tmp_path):
    settings = _settings(tmp_path)
    assert settings.resolved_rate_limit_url == "memory://"
    with TestClient(create_app(settings, run_reaper=False)) as a, \
            TestClient(create_app(settings, run_reaper=False)) as b:
        assert _codes(a, 6) == [200] * 5 + [429]
        assert _codes(b, 5) == [200] * 5   # another process: its own count
        assert int(a.get("/v1/jobs").headers["retry-after"]) >= 1


def test_api_processes_share_the_limit_through_redis(tmp_path, redis_url):
    settings = _settings(tmp_path, broker_url=redis_url)   # a unique queue prefix: its own Redis keys
    assert settings.resolved_rate_limit_url == redis_url
    with TestClient(create_app(settings, run_reaper=False)) as a, \
            TestClient(create_app(settings, run_reaper=False)) as b:
        assert _codes(a, 3) + _codes(b, 2) == [200] * 5
        refused = b.get("/v1/jobs")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert a.get("/v1/jobs").status_code == 429
    other = _settings(tmp_path / "other", broker_url=redis_url)   # another deployment's prefix: its own limit
    with TestClient(create_app(other, run_reaper=False)) as c:
        assert c.get("/v1/jobs").status_code == 200


def test_tenants_are_counted_apart_in_redis(tmp_path, redis_url):
    from storage.keys import create_key

    app = create_app(_settings(tmp_path, broker_url=redis_url, auth_enabled=True), run_reaper=False)
    with TestClient(app) as client:
        with app.state.runtime.sessions() as s:
            keys = [create_key(s, tenant, "t")[1] for tenant in ("ann", "ben")]
        ann, ben = ({"Authorization": f"Bearer {key}"} for key in keys)
        assert [client.get("/v1/jobs", headers=ann).status_code for _ in range(6)] == [200] * 5 + [429]
        assert client.get("/v1/jobs", headers=ben).status_code == 200


def test_an_unreachable_redis_does_not_refuse_requests(tmp_path):
    settings = _settings(tmp_path, rate_limit_url="redis://127.0.0.1:1/0")   # nothing listens on port 1
    with TestClient(create_app(settings, run_reaper=False)) as client:
        assert _codes(client, 7) == [200] * 7
