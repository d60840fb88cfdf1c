"""API keys: created once (the plaintext is shown only then), stored hashed."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiKey, utcnow

KEY_PREFIX = "mp_"


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(session: Session, tenant: str, name: str) -> tuple[ApiKey, str]:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant=tenant, name=name, prefix=plaintext[:10], key_hash=hash_key(plaintext))
    session.add(row)
    session.commit()
    return row, plaintext


def tenant_for(session: Session, plaintext: str) -> str | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext),
                                              ApiKey.revoked_at.is_(None)))
    return row.tenant if row else None


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))


def revoke(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.commit()
    return True
