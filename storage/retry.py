"""Retry database operations across short outages (a PostgreSQL restart or a
dropped connection), so a blip is not surfaced as a failed job."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_db_retry(fn: Callable[[], T], *, attempts: int = 6, first_delay: float = 0.5) -> T:
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            transient = isinstance(exc, OperationalError) or exc.connection_invalidated
            if not transient or attempt == attempts:
                raise
            log.warning("database unavailable (%s); retry %d/%d in %.1fs", type(exc.orig).__name__,
                        attempt, attempts - 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")
