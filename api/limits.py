"""Per-tenant request rate limit, and the bounds of JSON request bodies.

A token bucket per tenant, kept in this API process's memory: with N API
replicas the effective limit is N times the setting (documented in the README).
"""
from __future__ import annotations

import json
import math
import threading
import time

from fastapi import HTTPException


class RateLimiter:
    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, tenant: str) -> None:
        """Take one token or raise 429 with the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(tenant, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if tokens < 1.0:
                self._buckets[tenant] = (tokens, now)
                retry = max(1, int((1.0 - tokens) / self.rate + 0.999))
                raise HTTPException(429, "request rate limit exceeded", headers={"Retry-After": str(retry)})
            self._buckets[tenant] = (tokens - 1.0, now)


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
