"""The worker process's Celery app (`celery -A workers.celery_app:app worker`); its tasks live in
workers.tasks and workers.inspection."""
from __future__ import annotations

from core.broker import INSPECT_MODEL, RUN_JOB, make_celery
from core.settings import get_settings

__all__ = ["INSPECT_MODEL", "RUN_JOB", "app"]

app = make_celery(get_settings())
