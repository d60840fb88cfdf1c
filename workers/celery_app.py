"""The worker process's Celery app (`celery -A workers.celery_app:app worker`); its tasks live in
workers.tasks, workers.inspection and workers.webhooks."""
from __future__ import annotations

from core.broker import DELIVER_WEBHOOK, INSPECT_MODEL, RUN_JOB, make_celery
from core.settings import get_settings

__all__ = ["DELIVER_WEBHOOK", "INSPECT_MODEL", "RUN_JOB", "app"]

app = make_celery(get_settings())
