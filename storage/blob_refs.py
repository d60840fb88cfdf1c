"""Blob keys are content addressed per tenant, so models, datasets and artifacts with the same
bytes share one blob: it is deleted only when no row refers to it any more."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.blobs import BlobStore
from storage.models import Artifact, Dataset, Model


def drop_if_unreferenced(session: Session, blobs: BlobStore, key: str) -> bool:
    for table in (Model, Dataset, Artifact):
        if session.scalar(select(table.id).where(table.blob_key == key).limit(1)) is not None:
            return False
    blobs.delete(key)
    return True
