"""Per-tenant settings: the webhook secret, a default callback_url and the artifact retention.

A tenant without a row has the service defaults; the row is made on the first change or the first
need of a secret, with a fresh random secret."""
from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import TenantSettings

EDITABLE = ("callback_url", "artifact_retention_days")


def new_secret() -> str:
    return secrets.token_hex(32)


def get(session: Session, tenant: str) -> TenantSettings | None:
    return session.get(TenantSettings, tenant)


def ensure(session: Session, tenant: str) -> TenantSettings:
    row = session.get(TenantSettings, tenant)
    if row is not None:
        return row
    session.add(TenantSettings(tenant=tenant, webhook_secret=new_secret()))
    try:
        session.commit()
    except IntegrityError:   # a concurrent request made it first: theirs stands
        session.rollback()
    return session.get(TenantSettings, tenant, populate_existing=True)


def update(session: Session, tenant: str, values: dict) -> TenantSettings:
    """Set the given EDITABLE fields (None clears one back to the service default)."""
    row = ensure(session, tenant)
    for name, value in values.items():
        if name not in EDITABLE:
            raise KeyError(name)
        setattr(row, name, value)
    session.commit()
    return row


def rotate_secret(session: Session, tenant: str) -> str:
    """A new secret, returned only here; deliveries from now on are signed with it."""
    row = ensure(session, tenant)
    row.webhook_secret = new_secret()
    session.commit()
    return row.webhook_secret


def webhook_secret(session: Session, tenant: str) -> str:
    return ensure(session, tenant).webhook_secret


def default_callback(session: Session, tenant: str) -> str | None:
    return session.scalar(select(TenantSettings.callback_url).where(TenantSettings.tenant == tenant))


def retention_overrides(session: Session) -> dict[str, int]:
    """{tenant: days} for tenants with their own artifact retention."""
    rows = session.execute(select(TenantSettings.tenant, TenantSettings.artifact_retention_days)
                           .where(TenantSettings.artifact_retention_days.is_not(None)))
    return {tenant: days for tenant, days in rows}


def retention_days(session: Session, tenant: str, default: int | None) -> int | None:
    own = session.scalar(select(TenantSettings.artifact_retention_days).where(TenantSettings.tenant == tenant))
    return own if own is not None else default
