"""Annotated dependency aliases used by every router."""
from __future__ import annotations

import time
from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.settings import Settings
from storage.blobs import BlobStore
from storage.keys import hash_key, tenant_for
from storage.models import LOCAL_TENANT
from core.runtime import Runtime


# The light dependencies are `async def`: FastAPI runs a plain `def` dependency in the thread pool, a hop per
# request that costs most under load, when the pool is busy with uploads.
async def get_runtime(request: Request) -> Runtime:
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


class KeyCache:
    """{key: tenant} for `ttl_s` seconds, so most requests skip the database; unknown keys are never cached
    (a new key works at once), a revoked one works at most `ttl_s` longer (MODELPRESS_API_KEY_CACHE_S)."""

    def __init__(self, rt: Runtime, ttl_s: float, max_entries: int = 10_000):
        self.rt, self.ttl_s, self.max_entries = rt, ttl_s, max_entries
        self._entries: dict[str, tuple[str, float]] = {}

    def _lookup(self, key: str) -> str | None:
        # Its own short session: a request's session may live through a long
        # upload, and must not pin a pooled connection for all of it.
        with self.rt.sessions() as session:
            return tenant_for(session, key)

    async def tenant(self, key: str) -> str | None:
        now, digest = time.monotonic(), hash_key(key)   # no plaintext key stays in memory
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant = await run_in_threadpool(self._lookup, key)
        if tenant is not None and self.ttl_s > 0:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (tenant, now + self.ttl_s)
        return tenant


async def get_owner(request: Request, rt: RuntimeDep,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> str:
    """The tenant of the caller; every query filters on it, so another tenant's
    ids answer 404 exactly like ids that do not exist."""
    if not rt.settings.auth_enabled:
        tenant = LOCAL_TENANT
    else:
        key = credentials.credentials.strip() if credentials is not None else ""
        tenant = await request.app.state.api_keys.tenant(key) if key else None
        if tenant is None:
            raise UNAUTHORIZED
    await request.app.state.rate_limiter.hit(tenant)
    return tenant


OwnerDep = Annotated[str, Depends(get_owner)]


async def get_settings_dep(rt: RuntimeDep) -> Settings:
    return rt.settings


async def get_blobs(rt: RuntimeDep) -> BlobStore:
    return rt.blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
