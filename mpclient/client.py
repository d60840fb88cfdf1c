"""Typed Python client of the modelpress API."""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from mpclient.errors import ApiError, ChecksumMismatch, ConnectionFailed, WaitTimeout
from mpclient.models import Artifact, DatasetInfo, Job, JobPage, Metrics, ModelInfo, Recipe

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


class _ProgressFile:
    """A read-only file wrapper that reports how far httpx has read it (uploads stream in chunks)."""

    def __init__(self, f, total: int, callback: ProgressFn | None):
        self._f, self._total, self._cb = f, total, callback

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        if self._cb is not None:
            self._cb(self._f.tell(), self._total)
        return chunk

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:
        return self._f.fileno()


class Client:
    """`Client(url, api_key=None)`; also a context manager.

    Idempotent calls (GETs, and `submit` with its Idempotency-Key) are retried with
    exponential backoff on 5xx answers and connection errors; other calls only when
    the connection failed before anything was sent.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int | None = None, backoff: float = 0.5, max_backoff: float = 8.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = (url or os.environ.get("MODELPRESS_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("MODELPRESS_API_KEY") or None
        if retries is None:
            retries = int(os.environ.get("MODELPRESS_RETRIES", "4"))
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        headers = {"User-Agent": "modelpress-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout, connect=10.0))

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sleep_before_retry(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (0.5 + random.random() / 2)
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), self.max_backoff))
        time.sleep(delay)

    def _request(self, method: str, path: str, *, idempotent: bool, stream: bool = False,
                 follow_redirects: bool = False, **kw) -> httpx.Response:
        attempt = 0
        while True:
            try:
                req = self._http.build_request(method, path, **kw)
                resp = self._http.send(req, stream=stream, follow_redirects=follow_redirects)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if (idempotent or never_sent) and attempt < self.retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise ConnectionFailed(f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from exc
            if resp.status_code in RETRY_STATUSES and idempotent and attempt < self.retries:
                retry_after = resp.headers.get("retry-after")
                resp.close()
                self._sleep_before_retry(attempt, retry_after)
                attempt += 1
                continue
            if resp.status_code >= 400:
                if stream:
                    resp.read()
                raise _api_error(resp)
            return resp

    def _get(self, path: str, **params) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", path, idempotent=True, params=params).json()

    # -- models -----------------------------------------------------------------------------

    def upload_model(self, path: str | os.PathLike, architecture: str | None = None, options: dict | None = None,
                     progress: ProgressFn | None = None) -> ModelInfo:
        """Stream a model file to `POST /v1/models` (never read whole into memory)."""
        path = Path(path)
        total = path.stat().st_size
        data = {}
        if architecture:
            data["architecture"] = architecture
        if options:
            data["options"] = json.dumps(options)
        with open(path, "rb") as f:
            body = _ProgressFile(f, total, progress)
            # Not idempotent (each upload is a new model); retried only if nothing was sent.
            resp = self._request("POST", "/v1/models", idempotent=False, data=data,
                                 files={"file": (path.name, body, "application/octet-stream")})
        return ModelInfo.from_dict(resp.json())

    def model(self, model_id: str) -> ModelInfo:
        return ModelInfo.from_dict(self._get(f"/v1/models/{model_id}"))

    # -- datasets ---------------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike, progress: ProgressFn | None = None) -> DatasetInfo:
        """Stream a dataset (.npz, safetensors, CSV, Parquet or JSONL) to `POST /v1/datasets`."""
        path = Path(path)
        with open(path, "rb") as f:
            body = _ProgressFile(f, path.stat().st_size, progress)
            resp = self._request("POST", "/v1/datasets", idempotent=False,
                                 files={"file": (path.name, body, "application/octet-stream")})
        return DatasetInfo.from_dict(resp.json())

    def dataset(self, dataset_id: str) -> DatasetInfo:
        return DatasetInfo.from_dict(self._get(f"/v1/datasets/{dataset_id}"))

    def datasets(self, limit: int = 50, offset: int = 0) -> list[DatasetInfo]:
        return [DatasetInfo.from_dict(d) for d in self._get("/v1/datasets", limit=limit, offset=offset)["items"]]

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}", idempotent=True)

    def delete_model(self, model_id: str, cascade: bool = False) -> None:
        """cascade: also the finished jobs made from it, with their artifacts (active jobs: 409)."""
        self._request("DELETE", f"/v1/models/{model_id}", idempotent=True, params={"cascade": str(cascade).lower()})

    def delete_job(self, job_id: str) -> None:
        """A finished job with its artifacts (a queued or running one: cancel it first)."""
        self._request("DELETE", f"/v1/jobs/{job_id}", idempotent=True)

    def delete_artifact(self, artifact_id: str) -> None:
        self._request("DELETE", f"/v1/artifacts/{artifact_id}", idempotent=True)

    def usage(self) -> dict:
        """Bytes stored by kind against the quota, active jobs, the artifact retention."""
        return self._get("/v1/usage")

    # -- jobs -------------------------------------------------------------------------------

    def submit(self, model_id: str, recipe: str | None = None, pipeline: dict | None = None, *,
               goal: dict | None = None, analyze: dict | None = None, device: str | None = None,
               idempotency_key: str | None = None, data: dict[str, str] | None = None,
               teacher_model_id: str | None = None, callback_url: str | None = None) -> Job:
        """Submit a job; the Idempotency-Key (a fresh uuid unless given) makes retries safe.
        `goal`: instead of a recipe or pipeline, e.g. {"target": {"ratio": 10}, "constraint": {"metric": "cosine",
        "min": 0.98}} (needs data calibration or eval; the result is in job metrics["goal"]);
        `data`: dataset ids by role, e.g. {"train": "ds_…", "eval": "ds_…"}; `teacher_model_id`: an uploaded
        model the training stages learn from (this job's model is then the student); `analyze`: instead of
        compressing, per-layer sensitivity only ({} for the defaults; metrics["sensitivity"]); `callback_url`: a
        webhook POSTed the job document when the job finishes (default: the tenant's callback_url setting)."""
        if sum(x is not None for x in (recipe, pipeline, goal, analyze)) != 1:
            raise ValueError("give exactly one of recipe=, pipeline=, goal= or analyze=")
        body: dict[str, Any] = {"model_id": model_id}
        if recipe is not None:
            body["recipe"] = recipe
        elif goal is not None:
            body["goal"] = goal
        elif analyze is not None:
            body["analyze"] = analyze
        else:
            body["pipeline"] = pipeline
        if device:
            body["device"] = device
        if data:
            body["data"] = data
        if teacher_model_id:
            body["teacher_model_id"] = teacher_model_id
        if callback_url:
            body["callback_url"] = callback_url
        key = idempotency_key or str(uuid.uuid4())
        resp = self._request("POST", "/v1/jobs", idempotent=True, json=body, headers={"Idempotency-Key": key})
        return Job.from_dict(resp.json())

    def job(self, job_id: str) -> Job:
        return Job.from_dict(self._get(f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, limit: int = 50, offset: int = 0,
             model_id: str | None = None) -> JobPage:
        data = self._get("/v1/jobs", status=status, limit=limit, offset=offset, model_id=model_id)
        return JobPage(items=[Job.from_dict(j) for j in data["items"]], total=data["total"], limit=data["limit"],
                       offset=data["offset"], next_offset=data.get("next_offset"))

    def cancel(self, job_id: str) -> Job:
        return Job.from_dict(self._request("POST", f"/v1/jobs/{job_id}/cancel", idempotent=False).json())

    def metrics(self, job_id: str) -> Metrics:
        return Metrics.from_dict(self._get(f"/v1/jobs/{job_id}/metrics"))

    def artifacts(self, job_id: str) -> list[Artifact]:
        return [Artifact.from_dict(a) for a in self._get(f"/v1/jobs/{job_id}/artifacts")]

    def artifact(self, artifact_id: str) -> Artifact:
        return Artifact.from_dict(self._get(f"/v1/artifacts/{artifact_id}"))

    def recipes(self) -> list[Recipe]:
        return [Recipe.from_dict(r) for r in self._get("/v1/recipes")]

    def methods(self) -> dict[str, dict]:
        return self._get("/v1/methods")

    # -- waiting ----------------------------------------------------------------------------

    def events(self, job_id: str, max_seconds: float | None = None) -> Iterator[tuple[str, dict]]:
        """(event name, data) from `GET /v1/jobs/{id}/events` until the server closes the stream."""
        params = {"max_seconds": max_seconds} if max_seconds else {}
        resp = self._request("GET", f"/v1/jobs/{job_id}/events", idempotent=True, stream=True, params=params,
                             timeout=httpx.Timeout(60.0, connect=10.0))
        try:
            yield from _parse_sse(resp.iter_lines())
        finally:
            resp.close()

    def wait(self, job_id: str, timeout: float | None = None, on_progress: Callable[[Job], None] | None = None,
             poll_interval: float = 1.0) -> Job:
        """Block until the job finishes (any status); raise WaitTimeout after `timeout` seconds.

        Follows the job's event stream, reconnecting when the server closes it; falls
        back to polling `GET /v1/jobs/{id}` when streaming is unavailable.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.job(job_id)  # unknown ids raise ApiError(404) here
        last = None

        def report(j: Job) -> None:
            nonlocal last
            key = (j.status, j.stage, j.progress, j.error)
            if on_progress is not None and key != last:
                on_progress(j)
            last = key

        report(job)
        streaming = True
        while not job.finished:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(job)
            if streaming:
                try:
                    for name, data in self.events(job_id, max_seconds=max(1.0, left) if left and left < 300 else None):
                        if name == "job":
                            job = Job.from_dict(data)
                            report(job)
                            if job.finished:
                                break
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                    else:
                        if not job.finished:  # stream lifetime over or cut: re-read, then reconnect
                            job = self.job(job_id)
                            report(job)
                    continue
                except (ApiError, ConnectionFailed, httpx.HTTPError):
                    streaming = False  # no events endpoint, or a proxy that buffers: poll instead
            time.sleep(min(poll_interval, left) if left is not None else poll_interval)
            job = self.job(job_id)
            report(job)
        return job

    # -- downloads --------------------------------------------------------------------------

    def download(self, target: str | Artifact, dir: str | os.PathLike = ".", *,
                 progress: Callable[[Artifact, int, int], None] | None = None) -> list[Path]:
        """Download a job's artifacts (a `job_…` id), one artifact (an `art_…` id or an Artifact)
        into `dir`, streaming to disk; each file's sha256 is checked against `X-Checksum-SHA256`
        and the listed sha256, and a mismatching file is deleted (ChecksumMismatch)."""
        if isinstance(target, Artifact):
            arts = [target]
        elif target.startswith("job_"):
            arts = self.artifacts(target)
        else:
            arts = [self.artifact(target)]
        return [self._download_one(a, Path(dir), progress) for a in arts]

    def _download_one(self, art: Artifact, dir: Path, progress) -> Path:
        dir.mkdir(parents=True, exist_ok=True)
        dest = dir / Path(art.name).name
        part = dest.with_name(dest.name + ".part")
        # a server that presigns downloads redirects to its object store (httpx drops the API key on the way)
        resp = self._request("GET", f"/v1/artifacts/{art.id}/download", idempotent=True, stream=True,
                             follow_redirects=True)
        digest, done = hashlib.sha256(), 0
        total = int(resp.headers.get("content-length") or art.size_bytes or 0)
        try:
            with open(part, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(art, done, total)
        except httpx.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise ConnectionFailed(f"download of {art.id} broke off: {exc}") from exc
        finally:
            resp.close()
        got = digest.hexdigest()
        announced = resp.headers.get("x-checksum-sha256")
        expected = {s.lower() for s in (announced, art.sha256) if s}
        if not expected or expected != {got}:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{art.name}: sha256 {got} but the server announced "
                                   f"{announced or 'nothing'} (listed {art.sha256 or 'nothing'})")
        os.replace(part, dest)
        return dest


def _api_error(resp: httpx.Response) -> ApiError:
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text or resp.reason_phrase
    return ApiError(resp.status_code, detail, resp.request.method, str(resp.request.url))


def _parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                try:
                    yield name, json.loads("\n".join(data))
                except ValueError:
                    pass
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
