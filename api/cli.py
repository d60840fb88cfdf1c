"""`modelpress` command line: up (API + worker), api, worker, migrate; client commands from mpclient.cli."""
from __future__ import annotations

import argparse
import atexit
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from core.settings import get_settings
from core.procs import die_with_parent


def _migrate() -> None:
    from storage.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    if settings.blob_backend == "s3":   # the bucket too, so a fresh stack needs no manual step
        from core.runtime import make_blob_store

        make_blob_store(settings).ensure_bucket()


def _worker_argv(concurrency: int, queues: str | None) -> list[str]:
    settings = get_settings()
    if queues is None:
        import torch

        from core.broker import WEBHOOK_QUEUE

        # webhook attempts too, so `modelpress up` delivers them; a separate `--queues <prefix>.webhooks`
        # worker keeps them prompt while long jobs run
        kinds = ["gpu", "cpu"] if torch.cuda.is_available() else ["cpu"]
        queues = ",".join(settings.queue_name(k) for k in [*kinds, WEBHOOK_QUEUE])
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
            "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO", "-n", f"worker-{os.getpid()}@%h"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from api.app import create_app
    from core.logs import log_config

    print(f"modelpress API on http://{host}:{port}  (docs: http://{host}:{port}/docs)", flush=True)
    logging = log_config(get_settings().log_format)   # request ids in every line, text or JSON
    if workers > 1:  # separate processes: uvicorn needs an import string
        from api.serving import serve_processes

        _metrics_across_processes()
        serve_processes("api.app:create_app", host, port, workers, logging)
    else:
        uvicorn.run(create_app(), host=host, port=port, log_level="info", log_config=logging)


def _metrics_across_processes() -> None:
    """prometheus_client's multiprocess mode: each API process writes its counters to files in one folder and
    /metrics sums them (else a scrape sees whichever process answered). A fresh folder per run: files of an
    earlier run would count twice."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:   # the operator's own (empty it before each start)
        return
    folder = tempfile.mkdtemp(prefix="modelpress-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder


def _unsafe_bind(args: argparse.Namespace) -> bool:
    if _is_loopback(args.host) or get_settings().auth_enabled or args.allow_remote:
        return False
    print("refusing to listen on a non-loopback address with authentication off: set "
          "MODELPRESS_AUTH_ENABLED=true and create keys with `modelpress keys create`, or pass "
          "--allow-remote (only behind a trusted proxy).", file=sys.stderr)
    return True


def cmd_up(args: argparse.Namespace) -> int:
    if _unsafe_bind(args):
        return 2
    settings = get_settings()
    _migrate()
    print(f"data in {settings.home}", flush=True)
    worker = subprocess.Popen(_worker_argv(args.concurrency, None), preexec_fn=die_with_parent)
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit
    # that runs the cleanup below instead of killing us with the worker still up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _serve(args.host, args.port)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    if _unsafe_bind(args):
        return 2
    _serve(args.host, args.port, args.workers)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    argv = _worker_argv(args.concurrency, args.queues)
    os.execv(argv[0], argv)


def cmd_migrate(_args: argparse.Namespace) -> int:
    _migrate()
    print("database is at the latest revision" + (", bucket ready" if get_settings().blob_backend == "s3" else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelpress", description="Model compression as a service.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="migrate, then start the API and one worker (embedded default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--concurrency", type=int, default=1, help="worker processes")
    up.add_argument("--allow-remote", action="store_true", help="listen on a non-loopback address")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="start only the API (production: run migrate first)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--allow-remote", action="store_true", help="listen on a non-loopback address without auth")
    api.add_argument("--workers", type=int, default=1, help="API processes (each runs a reaper thread)")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="start a Celery worker")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--queues", default=None, help="default: gpu,cpu with CUDA, else cpu; and webhooks")
    worker.set_defaults(func=cmd_worker)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    from api.admin import add_parser as add_keys_parser

    add_keys_parser(sub)

    from mpclient.cli import add_parsers as add_client_parsers  # submit, jobs, status, download, cancel

    add_client_parsers(sub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
