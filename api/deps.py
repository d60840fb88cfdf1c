"""Annotated dependency aliases used by every router."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.settings import Settings
from storage.blobs import LocalBlobStore
from storage.models import LOCAL_TENANT
from workers.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_session(rt: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with rt.sessions() as session:
        yield session


def get_owner() -> str:
    # One local tenant until API keys arrive; every query already filters on it.
    return LOCAL_TENANT


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]
OwnerDep = Annotated[str, Depends(get_owner)]


def get_settings_dep(rt: RuntimeDep) -> Settings:
    return rt.settings


def get_blobs(rt: RuntimeDep) -> LocalBlobStore:
    return rt.blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[LocalBlobStore, Depends(get_blobs)]
