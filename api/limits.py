"""Per-tenant request rate limit.

A token bucket per tenant, kept in this API process's memory: with N API
replicas the effective limit is N times the setting (documented in the README).
"""
from __future__ import annotations

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
