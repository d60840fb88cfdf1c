"""Blob keys are content addressed per tenant, so models, datasets and artifacts with the same
bytes share one blob: it is deleted only when no row refers to it any more."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.blobs import BlobStore
from storage.models import Artifact, Dataset, Model

Row = TypeVar("Row", Model, Dataset)


def drop_if_unreferenced(session: Session, blobs: BlobStore, key: str) -> bool:
    for table in (Model, Dataset, Artifact):
        if session.scalar(select(table.id).where(table.blob_key == key).limit(1)) is not None:
            return False
    blobs.delete(key)
    return True


def insert_with_blob(sessions: Callable[[], Session], blobs: BlobStore, row: Row) -> Row:
    """Insert a row whose blob is already committed; if the insert fails the blob goes too, unless
    another row shares it."""
    with sessions() as session:
        session.add(row)
        try:
            session.commit()
        except BaseException:
            session.rollback()
            drop_if_unreferenced(session, blobs, row.blob_key)
            raise
        return row
