"""Object lookup scoped to the caller's tenant: another tenant's id is a 404,
indistinguishable from an id that does not exist (no existence oracle)."""
from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException
from sqlalchemy.orm import Session

from storage.models import Artifact, Dataset, Job, Model

T = TypeVar("T", Model, Job, Artifact, Dataset)
NOUNS = {Model: "model", Job: "job", Artifact: "artifact", Dataset: "dataset"}


def get_owned(session: Session, owner: str, cls: type[T], obj_id: str) -> T:
    obj = session.get(cls, obj_id)
    if obj is None or obj.owner != owner:
        raise HTTPException(404, f"{NOUNS[cls]} {obj_id} not found")
    return obj
