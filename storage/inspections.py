"""Inspection state of uploaded models (the worker side is workers/inspection.py)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import InspectionStatus, Model, utcnow


def lost_inspections(session: Session, *, resend_after: timedelta, now: datetime | None = None) -> list[str]:
    """Pending inspections never sent (models older than the inspection column) or sent longer ago than
    `resend_after`: marked as sent now and returned for the caller to (re)send. Duplicates are harmless
    (only a pending model is updated by an inspection)."""
    now = now or utcnow()
    pending = Model.inspection_status == InspectionStatus.pending.value
    stale = (Model.inspection_enqueued_at.is_(None)) | (Model.inspection_enqueued_at < now - resend_after)
    ids = session.scalars(select(Model.id).where(pending, stale).limit(500)).all()
    sent = []
    for model_id in ids:
        res = session.execute(update(Model).where(Model.id == model_id, pending, stale)
                              .values(inspection_enqueued_at=now))
        if res.rowcount == 1:
            sent.append(model_id)
    session.commit()
    return sent
