"""Load test of the real stack on loopback (issue: nobody gets in, nothing gets lost).

Starts its own API (uvicorn) and workers against PostgreSQL + Redis on this
machine (a fresh database and fresh queue names), then:
  phase 1: N concurrent uploads of a ~100 MB model while P pollers hammer job
           status for D seconds;
  phase 2: J jobs submitted at once, run by the workers.
Reports throughput, p50/p99 status latency, API memory (RSS) over time, 5xx
count, lost/duplicated jobs and artifact checksum failures. Bounded in count and
time; talks to 127.0.0.1 only.

    python bench/load.py                      # the issue's sizes (several minutes)
    python bench/load.py --uploads 4 --pollers 40 --seconds 10 --jobs 10 --upload-mb 20   # quick
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("MODELPRESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("MODELPRESS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn's workers)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mb(int(child))
    return total


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def make_models(folder: Path, upload_mb: int) -> tuple[Path, Path]:
    torch.manual_seed(0)
    from compression.formats.architectures import build_architecture

    small = folder / "lenet.safetensors"
    save_file(build_architecture("lenet-300-100").state_dict(), str(small))
    width = 2048
    depth = max(1, round(upload_mb * 2**20 / (width * width * 4)))
    big = folder / "big.ts"
    mlp = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)]).eval()
    torch.jit.save(torch.jit.script(mlp), str(big))
    return small, big


async def upload(client: httpx.AsyncClient, path: Path, data: dict) -> httpx.Response:
    with open(path, "rb") as f:
        return await client.post("/v1/models", files={"file": (path.name, f)}, data=data)


async def phase_uploads(client, big: Path, args, api_pid: int, stats: dict) -> None:
    job_id = stats["probe_job"]
    latencies: list[float] = []
    stop_at = time.monotonic() + args.seconds
    memory: list[float] = []

    async def poller():
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            r = await client.get(f"/v1/jobs/{job_id}")
            latencies.append(time.perf_counter() - t0)
            stats["codes"][r.status_code] = stats["codes"].get(r.status_code, 0) + 1

    async def uploader():
        done = 0
        while time.monotonic() < stop_at:
            r = await upload(client, big, {"options": '{"input_shape": [1, 2048]}'})
            stats["codes"][r.status_code] = stats["codes"].get(r.status_code, 0) + 1
            done += r.status_code == 201
        return done

    async def sampler():
        while time.monotonic() < stop_at:
            memory.append(rss_mb(api_pid))
            await asyncio.sleep(1)

    t0 = time.monotonic()
    results = await asyncio.gather(*[uploader() for _ in range(args.uploads)],
                                   *[poller() for _ in range(args.pollers)], sampler())
    elapsed = time.monotonic() - t0
    uploads = sum(results[: args.uploads])
    stats.update(upload_count=uploads, upload_mb_s=uploads * big.stat().st_size / 2**20 / elapsed,
                 status_calls=len(latencies), status_rps=len(latencies) / elapsed,
                 status_p50_ms=1000 * pct(latencies, 0.5), status_p99_ms=1000 * pct(latencies, 0.99),
                 api_rss_mb=(min(memory), max(memory)) if memory else None)


async def phase_jobs(client, model_id: str, args, stats: dict) -> None:
    t0 = time.monotonic()
    responses = await asyncio.gather(*[
        client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"},
                    headers={"Idempotency-Key": f"load-{i}"}) for i in range(args.jobs)])
    for r in responses:
        stats["codes"][r.status_code] = stats["codes"].get(r.status_code, 0) + 1
    ids = [r.json()["id"] for r in responses if r.status_code == 201]
    pending = set(ids)
    deadline = time.monotonic() + args.job_timeout
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                pending.discard(job_id)
        await asyncio.sleep(1)
    elapsed = time.monotonic() - t0
    jobs = [(await client.get(f"/v1/jobs/{j}")).json() for j in ids]
    bad_checksums = 0
    for job in jobs:
        for art in (await client.get(f"/v1/jobs/{job['id']}/artifacts")).json():
            body = (await client.get(art["download_url"])).content
            bad_checksums += hashlib.sha256(body).hexdigest() != art["sha256"]
    stats.update(jobs_submitted=len(ids), jobs_succeeded=sum(j["status"] == "succeeded" for j in jobs),
                 jobs_lost=len(pending), jobs_rerun=sum(j["attempts"] > 1 for j in jobs),
                 jobs_per_min=60 * len(ids) / elapsed, bad_checksums=bad_checksums)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--job-timeout", type=float, default=900)
    parser.add_argument("--api-processes", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelpress-load-"))
    dbname = f"mp_load_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    port = free_port()
    env = {**os.environ, "MODELPRESS_HOME": str(work / "home"),
           "MODELPRESS_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}",
           "MODELPRESS_BROKER_URL": REDIS, "MODELPRESS_QUEUE_PREFIX": f"load-{secrets.token_hex(4)}",
           "MODELPRESS_TENANT_MAX_ACTIVE_JOBS": str(args.jobs + 10),
           "MODELPRESS_TENANT_REQUESTS_PER_MINUTE": "1000000"}
    procs = []
    try:
        subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, cwd=ROOT, check=True)
        api = subprocess.Popen([sys.executable, "-m", "api.cli", "api", "--port", str(port),
                                "--workers", str(args.api_processes)], env=env, cwd=ROOT,
                               stdout=open(work / "api.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(api)
        procs.append(subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "--concurrency", str(args.workers)],
                                      env=env, cwd=ROOT, stdout=open(work / "worker.log", "wb"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        small, big = make_models(work, args.upload_mb)
        stats: dict = {"codes": {}}

        async def run():
            # Expire idle keep-alive connections before uvicorn's 5 s server-side
            # timeout does, or a request can race the server closing its socket.
            limits = httpx.Limits(max_connections=args.pollers + args.uploads + 10, keepalive_expiry=2.0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as client:
                for _ in range(100):
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.3)
                model = (await upload(client, small, {"architecture": "lenet-300-100"})).json()
                probe = (await client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "fp16"})).json()
                stats["probe_job"] = probe["id"]
                await phase_uploads(client, big, args, api.pid, stats)
                await phase_jobs(client, model["id"], args, stats)

        asyncio.run(run())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    five_xx = sum(n for code, n in stats["codes"].items() if code >= 500)
    print(f"\nload test ({args.uploads} uploaders × {big.stat().st_size / 2**20:.0f} MB, {args.pollers} pollers, "
          f"{args.seconds:.0f} s; {args.jobs} jobs on {args.workers} workers)")
    print(f"| metric | value |\n|---|---|")
    for key in ("upload_count", "upload_mb_s", "status_calls", "status_rps", "status_p50_ms", "status_p99_ms",
                "api_rss_mb", "jobs_submitted", "jobs_succeeded", "jobs_lost", "jobs_rerun", "jobs_per_min",
                "bad_checksums"):
        value = stats.get(key)
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")
    print(f"| http codes | {dict(sorted(stats['codes'].items()))} |\n| 5xx | {five_xx} |")
    ok = five_xx == 0 and stats.get("jobs_lost") == 0 and stats.get("bad_checksums") == 0 \
        and stats.get("jobs_succeeded") == stats.get("jobs_submitted") == args.jobs
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
