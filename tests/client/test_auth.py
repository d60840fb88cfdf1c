"""With authentication on: the client and the CLI send `Authorization: Bearer`, the
event stream is scoped to the caller's tenant like GET /v1/jobs/{id}."""
from __future__ import annotations

import json

import httpx
import pytest

from mpclient import ApiError, Client
from mpclient.cli import main as cli_main
from tests.client.livestack import auth_server  # noqa: F401


def test_client_and_cli_with_api_key(auth_server, lenet_file, monkeypatch, capsys, tmp_path):
    with Client(auth_server.url, api_key=auth_server.key_a) as c:
        model = c.upload_model(lenet_file, architecture="lenet-300-100")
        job = c.submit(model.id, recipe="int8")
        events = list(c.events(job.id, max_seconds=0.8))
        assert [n for n, _ in events] == ["job", "reconnect"] and events[0][1]["id"] == job.id

    with Client(auth_server.url, api_key="") as anonymous, pytest.raises(ApiError) as err:
        anonymous.jobs()
    assert err.value.status == 401
    # another tenant's key: the job and its events do not exist for it
    with Client(auth_server.url, api_key=auth_server.key_b) as other:
        with pytest.raises(ApiError) as err:
            other.job(job.id)
        assert err.value.status == 404
    r = httpx.get(f"{auth_server.url}/v1/jobs/{job.id}/events",
                  headers={"Authorization": f"Bearer {auth_server.key_b}"})
    assert r.status_code == 404
    assert httpx.get(f"{auth_server.url}/v1/jobs/{job.id}/events").status_code == 401

    monkeypatch.setenv("MODELPRESS_RETRIES", "0")
    monkeypatch.setenv("MODELPRESS_API_KEY", auth_server.key_a)
    assert cli_main(["jobs", "--url", auth_server.url, "--json"]) == 0
    assert job.id in [j["id"] for j in json.loads(capsys.readouterr().out)["items"]]
    assert cli_main(["cancel", job.id, "--url", auth_server.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    monkeypatch.delenv("MODELPRESS_API_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli_main(["status", job.id, "--url", auth_server.url]) == 3
    assert "401" in capsys.readouterr().err
    # the key from the config file (owner-only), with no flag and no environment
    config = tmp_path / "modelpress" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"api_key": auth_server.key_a}))
    config.chmod(0o600)
    assert cli_main(["status", job.id, "--url", auth_server.url]) == 1   # found (the job was cancelled)
    assert "warning" not in capsys.readouterr().err
    config.chmod(0o644)
    assert cli_main(["status", job.id, "--url", auth_server.url]) == 1
    assert "readable by other users" in capsys.readouterr().err
    config.unlink()
    # the flag still works, with a warning that says where the key should live
    assert cli_main(["status", job.id, "--url", auth_server.url, "--api-key", auth_server.key_a]) == 1  # cancelled
    assert "MODELPRESS_API_KEY" in capsys.readouterr().err
