"""Exceptions raised by the client."""
from __future__ import annotations


class ModelpressError(Exception):
    """Base class of every error the client raises."""


class ApiError(ModelpressError):
    """The API answered with an error status; `detail` is its `{"detail": ...}`."""

    def __init__(self, status: int, detail, method: str = "", url: str = ""):
        self.status, self.detail, self.method, self.url = status, detail, method, url
        super().__init__(f"{method} {url} -> HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        d = self.detail
        if isinstance(d, list):  # FastAPI validation errors
            return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
                             if isinstance(e, dict) else str(e) for e in d)
        return str(d)


class ConnectionFailed(ModelpressError):
    """The service could not be reached (after retries)."""


class ChecksumMismatch(ModelpressError):
    """A download's sha256 differs from the one the server announced."""


class WaitTimeout(ModelpressError, TimeoutError):
    """`Client.wait` gave up before the job finished."""

    def __init__(self, job):
        self.job = job
        super().__init__(f"job {job.id} still {job.status} after the timeout")
