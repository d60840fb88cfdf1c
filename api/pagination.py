from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


def paginate(session: Session, stmt: Select, limit: int, offset: int) -> dict:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    items = session.scalars(stmt.limit(limit).offset(offset)).all()
    return dict(items=items, total=total, limit=limit, offset=offset,
                next_offset=offset + limit if offset + limit < total else None)
