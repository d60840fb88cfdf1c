"""The third task: one webhook attempt for a finished job, retried by Celery after the backoff that
core.webhooks computes. The attempt count and log live on the job row, so a redelivered message neither
restarts the count nor delivers twice once delivered."""
from __future__ import annotations

from core.runtime import runtime
from core.webhooks import deliver_once
from workers.celery_app import DELIVER_WEBHOOK, app


# max_retries=None: the job row bounds the attempts (MODELPRESS_WEBHOOK_MAX_ATTEMPTS), not Celery's default of 3
@app.task(name=DELIVER_WEBHOOK, bind=True, max_retries=None)
def deliver_webhook(self, job_id: str) -> None:
    delay = deliver_once(runtime(), job_id)
    if delay is not None:
        raise self.retry(countdown=delay)
