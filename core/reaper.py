"""Finds jobs whose worker died, queued jobs, inspections and webhooks the broker lost, and acts on them;
deletes artifacts past their retention.

Runs as a thread beside the API (every API replica may run one: each state
change is a conditional UPDATE, so they cannot double-act)."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from storage import jobs, tenants, webhooks
from storage.deletion import sweep_expired_artifacts
from storage.inspections import lost_inspections
from storage.models import Job, utcnow
from core.runtime import Runtime
from core.webhooks import announce

log = logging.getLogger(__name__)


def reap_once(rt: Runtime) -> jobs.ReapResult:
    s = rt.settings
    resend_after = timedelta(seconds=s.requeue_queued_after_s)
    with rt.sessions() as session:
        result = jobs.reap(
            session,
            stale_after=timedelta(seconds=s.stale_job_after_s),
            max_attempts=s.max_attempts,
            requeue_queued_after=resend_after,
        )
        for job_id in result.requeued + result.resent:
            rt.enqueue(job_id, session.get(Job, job_id).queue)
        inspections = lost_inspections(session, resend_after=resend_after)
        # webhooks of the jobs failed just now, and deliveries whose message was lost
        hooks = webhooks.pending_among(session, result.failed) + webhooks.overdue(session, resend_after)
    for model_id in inspections:
        rt.enqueue_inspection(model_id)
    announce(rt, hooks)
    for job_id in result.failed:   # given up or cancelled: no attempt will resume from its checkpoints
        rt.blobs.drop_scratch(f"checkpoints/{job_id}")
    # Temp files of uploads that died mid-stream (a day covers any live upload).
    rt.blobs.sweep_tmp(older_than_s=86400)
    sweep_retention(rt)
    if result.requeued or result.failed or result.resent or inspections:
        log.warning("reaper: requeued %s, failed %s, resent %s, inspections sent %s", result.requeued, result.failed,
                    result.resent, inspections)
    return result


def sweep_retention(rt: Runtime) -> int:
    """Artifacts past their tenant's retention, or the service's for tenants without their own."""
    with rt.sessions() as session:
        own = tenants.retention_overrides(session)
        expired = sum(sweep_expired_artifacts(session, rt.blobs, utcnow() - timedelta(days=days), owners=[tenant])
                      for tenant, days in own.items())
        if rt.settings.artifact_retention_days:
            cutoff = utcnow() - timedelta(days=rt.settings.artifact_retention_days)
            expired += sweep_expired_artifacts(session, rt.blobs, cutoff, exclude=own)
    if expired:
        log.info("reaper: deleted %s artifact(s) past their retention", expired)
    return expired


class Reaper(threading.Thread):
    def __init__(self, rt: Runtime):
        super().__init__(name="modelpress-reaper", daemon=True)
        self.rt = rt
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.reaper_interval_s):
            try:
                reap_once(self.rt)
            except Exception:  # DB or broker blip: try again next round
                log.warning("reaper round failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
