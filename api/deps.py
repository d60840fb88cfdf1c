"""Annotated dependency aliases used by every router."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.settings import Settings
from storage.blobs import LocalBlobStore
from storage.keys import tenant_for
from storage.models import LOCAL_TENANT
from core.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_session(rt: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    with rt.sessions() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# scope="function": the session closes (and its pooled connection returns) as soon
# as the endpoint returns, not after the response has been sent; under load a
# slow client must not pin a database connection.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

UNAUTHORIZED = HTTPException(401, "missing or invalid API key; send 'Authorization: Bearer <key>'",
                             headers={"WWW-Authenticate": "Bearer"})


# Declares the scheme in OpenAPI (securitySchemes + per-route security, so generated clients and /docs
# know about keys); auto_error off: without auth the embedded default needs no header, and our 401 says more.
BEARER = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="an API key (`modelpress keys create --tenant NAME`) as 'Authorization: Bearer <key>'; "
                                "not needed when the service runs without authentication (the embedded default)")


def get_owner(request: Request, rt: RuntimeDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> str:
    """The tenant of the caller; every query filters on it, so another tenant's
    ids answer 404 exactly like ids that do not exist."""
    if not rt.settings.auth_enabled:
        tenant = LOCAL_TENANT
    else:
        key = credentials.credentials if credentials is not None else ""
        if not key:
            raise UNAUTHORIZED
        # Its own short session: a request's session may live through a long
        # upload, and must not pin a pooled connection for all of it.
        with rt.sessions() as session:
            tenant = tenant_for(session, key.strip())
        if tenant is None:
            raise UNAUTHORIZED
    request.app.state.rate_limiter.hit(tenant)
    return tenant


OwnerDep = Annotated[str, Depends(get_owner)]


def get_settings_dep(rt: RuntimeDep) -> Settings:
    return rt.settings


def get_blobs(rt: RuntimeDep) -> LocalBlobStore:
    return rt.blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[LocalBlobStore, Depends(get_blobs)]
