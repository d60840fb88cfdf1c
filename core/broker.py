"""Celery app factory and task names. The broker only carries job ids; the database holds state.

The API sends tasks by name through `Runtime.celery`; the worker process runs `workers.celery_app:app`."""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings

RUN_JOB = "modelpress.run_job"
INSPECT_MODEL = "modelpress.inspect_model"
DELIVER_WEBHOOK = "modelpress.deliver_webhook"
# Webhook attempts have their own queue: a worker that consumes it apart (or beside its job queues with
# concurrency > 1) delivers them while long jobs run.
WEBHOOK_QUEUE = "webhooks"


def make_celery(settings: Settings) -> Celery:
    app = Celery("modelpress")
    broker_url = settings.resolved_broker_url
    conf = dict(
        broker_url=broker_url,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the database
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Backstops: the job's own child process enforces job_time_limit_s first.
        task_time_limit=settings.job_time_limit_s + 120,
        task_soft_time_limit=settings.job_time_limit_s + 60,
        task_queues=[Queue(settings.queue_name(kind)) for kind in ("cpu", "gpu", WEBHOOK_QUEUE)],
        task_default_queue=settings.queue_name(settings.default_queue),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Task events for Flower / `celery events` (MODELPRESS_CELERY_EVENTS=1): workers send started/succeeded/
        # failed, and senders a task-sent event, so a monitor sees queued tasks too.
        worker_send_task_events=settings.celery_events,
        task_send_sent_event=settings.celery_events,
        include=["workers.tasks", "workers.inspection", "workers.webhooks"],
    )
    if broker_url.startswith("filesystem://"):
        # Embedded default: a folder both the API and the worker see, no server.
        folder = settings.broker_folder
        for sub in ("in", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),  # default is the CWD
        }
    elif broker_url.startswith("redis"):
        # Redelivery of unacked messages after a worker dies; the reaper is the
        # faster path, this is the backstop.
        conf["broker_transport_options"] = {"visibility_timeout": settings.job_time_limit_s + 300}
    app.conf.update(conf)
    return app

