"""`GET /metrics` for Prometheus: HTTP metrics by route template (prometheus-fastapi-instrumentator), bytes
uploaded and downloaded, and job and queue metrics. Nothing is labelled with a tenant, a job or an object id.

Job metrics are read from the database at scrape time, not counted where jobs run: jobs run in worker
processes, often on other hosts, and the database already holds every job's status, queue, timestamps and
error, so one GROUP BY gives the same figures from any API process, with no metrics state in the workers
(no multiprocess files to share across hosts, no worker endpoints to scrape). Deleting jobs lowers the
finished counts (Prometheus reads that as a counter reset).

HTTP and byte counters live in the API process; `modelpress api --workers N` sets PROMETHEUS_MULTIPROC_DIR,
and prometheus_client then sums every process's values."""
from __future__ import annotations

import hmac
import json
import os
from typing import Annotated, Iterator

from fastapi import FastAPI, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator

from core.runtime import Runtime
from storage import job_stats

UPLOAD_ROUTES = {"/v1/models": "model", "/v1/datasets": "dataset"}


def job_method(recipe: str | None, pipeline_json: str | None) -> str:
    """What a job ran, as a label: the preset's name, goal, analyze, or the pipeline's stage kinds."""
    if recipe:
        return recipe
    try:
        pipeline = json.loads(pipeline_json or "{}")
    except ValueError:
        return "pipeline"
    for kind in ("goal", "analyze"):
        if kind in pipeline:
            return kind
    kinds = [str(stage.get("kind", "?")) for stage in pipeline.get("stages") or [] if isinstance(stage, dict)]
    return "+".join(kinds) or "pipeline"


class JobCollector(Collector):
    """Job and queue figures from the database, computed at each scrape."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    def collect(self) -> Iterator:
        with self.rt.sessions() as session:
            by_status = job_stats.jobs_by_status(session)
            waiting = job_stats.oldest_queued_age_s(session)
            inspections = job_stats.inspections_by_status(session)
            finished = job_stats.finished_jobs(session)
        jobs = GaugeMetricFamily("modelpress_jobs", "Jobs by status and queue", labels=["status", "queue"])
        for status, queue, count in by_status:
            jobs.add_metric([status, queue], count)
        yield jobs
        oldest = GaugeMetricFamily("modelpress_queue_oldest_job_age_seconds",
                                   "How long the oldest queued job of each queue has waited", labels=["queue"])
        for queue, age in waiting.items():
            oldest.add_metric([queue], age)
        yield oldest
        inspect = GaugeMetricFamily("modelpress_model_inspections", "Uploaded models by inspection status",
                                    labels=["status"])
        for status, count in inspections.items():
            inspect.add_metric([status], count)
        yield inspect
        yield from _finished_families(finished)


def _finished_families(groups: list[job_stats.FinishedGroup]) -> Iterator:
    """Histogram of durations, counts and failures by method; groups that map to one label are summed."""
    hist: dict[tuple, list] = {}
    total: dict[tuple, int] = {}
    failures: dict[tuple, int] = {}
    for g in groups:
        key = (job_method(g.recipe, g.pipeline), g.status)
        h = hist.setdefault(key, [[0] * len(job_stats.DURATION_BUCKETS), 0, 0.0])
        h[0] = [a + b for a, b in zip(h[0], g.bucket_counts)]
        h[1], h[2] = h[1] + g.timed, h[2] + g.duration_sum
        total[key] = total.get(key, 0) + g.count
        if g.error_class:
            failures[(key[0], g.error_class)] = failures.get((key[0], g.error_class), 0) + g.count
    duration = HistogramMetricFamily("modelpress_job_duration_seconds", "Finished jobs from start to finish",
                                     labels=["method", "outcome"])
    for (method, outcome), (buckets, timed, seconds) in sorted(hist.items()):
        pairs = [(repr(bound), count) for bound, count in zip(job_stats.DURATION_BUCKETS, buckets)]
        duration.add_metric([method, outcome], pairs + [("+Inf", timed)], seconds)
    yield duration
    done = CounterMetricFamily("modelpress_jobs_finished", "Finished jobs (cancelled while queued included)",
                               labels=["method", "outcome"])
    for (method, outcome), count in sorted(total.items()):
        done.add_metric([method, outcome], count)
    yield done
    failed = CounterMetricFamily("modelpress_job_failures", "Failed jobs by error class",
                                 labels=["method", "error_class"])
    for (method, error_class), count in sorted(failures.items()):
        failed.add_metric([method, error_class], count)
    yield failed


class TransferCounter:
    """Plain ASGI: counts the body bytes of uploads as they arrive and of downloads as they leave."""

    def __init__(self, app, uploads: Counter, downloads: Counter):
        self.app, self.uploads, self.downloads = app, uploads, downloads

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        kind = UPLOAD_ROUTES.get(scope["path"].rstrip("/")) if scope["method"] == "POST" else None
        if kind is not None:
            counter = self.uploads.labels(kind)

            async def counting_receive():
                message = await receive()
                if message["type"] == "http.request":
                    counter.inc(len(message.get("body", b"")))
                return message
            return await self.app(scope, counting_receive, send)
        if scope["method"] == "GET" and scope["path"].startswith("/v1/artifacts/") \
                and scope["path"].endswith("/download"):
            async def counting_send(message):
                if message["type"] == "http.response.body":
                    self.downloads.inc(len(message.get("body", b"")))
                await send(message)
            return await self.app(scope, receive, counting_send)
        return await self.app(scope, receive, send)


def _registry_for_scrape(registry: CollectorRegistry, jobs: JobCollector) -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return registry
    merged = CollectorRegistry()   # every API process's files, summed, plus the database's figures
    multiprocess.MultiProcessCollector(merged)
    merged.register(jobs)
    return merged


def install_metrics(app: FastAPI, rt: Runtime) -> None:
    """HTTP instrumentation, byte counters and the /metrics route. A registry per app: tests build many."""
    registry = CollectorRegistry()
    uploads = Counter("modelpress_upload_bytes", "Upload body bytes received", ["kind"], registry=registry)
    for kind in UPLOAD_ROUTES.values():
        uploads.labels(kind)   # exported from the start, at 0
    downloads = Counter("modelpress_download_bytes", "Artifact bytes sent by the API", registry=registry)
    jobs = JobCollector(rt)
    registry.register(jobs)
    # per-route latency buckets fine enough for percentiles of fast routes (the default is 0.1, 0.5, 1 s)
    Instrumentator(registry=registry, excluded_handlers=["^/metrics$"]).instrument(app, latency_lowr_buckets=(
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    app.add_middleware(TransferCounter, uploads=uploads, downloads=downloads)
    token = rt.settings.metrics_token.get_secret_value().encode() if rt.settings.metrics_token else None

    @app.get("/metrics", include_in_schema=False)
    def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        if token is not None:
            given = (authorization or "").removeprefix("Bearer ").strip().encode()
            if not hmac.compare_digest(given, token):
                raise HTTPException(401, "send 'Authorization: Bearer <MODELPRESS_METRICS_TOKEN>'",
                                    headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(_registry_for_scrape(registry, jobs)), media_type=CONTENT_TYPE_LATEST)
