"""Per-tenant request rate limit, and the bounds of JSON request bodies.

Request rates are counted with `limits` (a sliding window counter: at most N requests in about any 60 s, O(1)
per request): in Redis when the service has one (MODELPRESS_RATE_LIMIT_URL, default the broker's Redis), so
every API process and replica counts against the same limit; in this process's memory for the embedded
default.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from fastapi import HTTPException
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncLimiter
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, per_minute: int, storage_url: str = "memory://", key_prefix: str = "modelpress"):
        self.item = RateLimitItemPerMinute(per_minute)
        self.url, self.key_prefix = storage_url, f"{key_prefix}-rate"
        self.shared = storage_url.startswith(("redis://", "rediss://"))
        self._memory = None if self.shared else SlidingWindowCounterRateLimiter(storage_from_string(storage_url))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: AsyncLimiter | None = None
        self._warned = 0.0

    def _shared_limiter(self) -> AsyncLimiter:
        """An asyncio Redis client belongs to the event loop it was made in (one per API process; tests run
        an app on several loops in turn)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            storage = RedisStorage(f"async+{self.url}", implementation="redispy", key_prefix=self.key_prefix,
                                   socket_timeout=2, socket_connect_timeout=2)
            self._loop, self._redis = loop, AsyncLimiter(storage)
        return self._redis

    async def hit(self, tenant: str) -> None:
        """Count one request or raise 429 with the seconds until the window lets the next one in."""
        if self._memory is not None:
            if self._memory.hit(self.item, tenant):
                return
            reset = self._memory.get_window_stats(self.item, tenant).reset_time
        else:
            limiter = self._shared_limiter()
            try:
                if await limiter.hit(self.item, tenant):
                    return
                reset = (await limiter.get_window_stats(self.item, tenant)).reset_time
            except Exception as exc:   # Redis down: serve rather than refuse everyone; say so once a minute
                if time.monotonic() - self._warned > 60:
                    self._warned = time.monotonic()
                    log.warning("rate limit storage unavailable (%s: %s); not limiting", type(exc).__name__, exc)
                return
        retry = max(1, math.ceil(reset - time.time()))
        raise HTTPException(429, "request rate limit exceeded", headers={"Retry-After": str(retry)})


class JsonRefused(ValueError):
    """Parses in Python, but is not JSON a service should act on."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"{text} is out of range: numbers must be finite")
    return value


def _no_constants(token: str):
    raise JsonRefused(f"{token} is not a JSON number: numbers must be finite")


def loads_strict(text: str | bytes) -> object:
    """json.loads that refuses what JSON has not got but Python's parser takes (NaN, Infinity, numbers that
    overflow to them), and nesting deep enough to exhaust the stack (JsonRefused); malformed JSON is a
    ValueError (json.JSONDecodeError) as usual."""
    try:
        return json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except RecursionError:
        raise JsonRefused("nested too deeply") from None


class JsonBodyGuard:
    """Bounds request bodies other than multipart uploads (which stream under their own limits; 413) and
    refuses non-finite numbers in JSON bodies (422) before a route sees them. Plain ASGI: the body is read
    once, checked, and handed on."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"").lower() if scope["type"] == "http" else b""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD") or ctype.startswith(b"multipart/"):
            return await self.app(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(send, 413, f"request body exceeds {self.max_bytes} bytes "
                                               "(MODELPRESS_MAX_JSON_BODY_BYTES)")
        if b"json" in ctype and body:
            try:
                loads_strict(bytes(body))
            except JsonRefused as exc:
                return await _reply(send, 422, f"request body: {exc}")
            except ValueError:   # malformed JSON: the route's own parser answers, saying where
                pass
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
