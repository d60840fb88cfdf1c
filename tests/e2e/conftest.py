"""`modelpress up` as the README starts it, for the tests that need the whole embedded service."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPRESS_")}
    env["MODELPRESS_LATENCY_BUDGET_S"] = os.environ["MODELPRESS_LATENCY_BUDGET_S"]   # see tests/conftest.py
    env["MODELPRESS_HOME"] = str(tmp_path / "home")
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((tmp_path / "up.log").read_text())
        time.sleep(0.2)
    yield client, tmp_path
    client.close()
    proc.terminate()  # as a user's Ctrl-C / service manager would: `up` stops its worker itself
    proc.wait(timeout=60)
    try:
        _wait_group_gone(proc.pid, timeout=30)
    finally:
        _kill_group(proc.pid)
        log.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except ProcessLookupError:
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("`modelpress up` left its worker running after it stopped")
