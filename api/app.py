"""FastAPI app factory."""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError, TimeoutError as PoolTimeout

import web
from api.routers import artifacts, catalog, datasets, events, health, jobs, models, tenant
from api.deps import KeyCache
from api.limits import JsonBodyGuard, RateLimiter
from api.metrics import install_metrics
from api.reads import DocumentReads
from api.schemas import ERROR_RESPONSES
from compression.errors import ModelpressError
from core.logs import RequestIdMiddleware
from core.settings import Settings, get_settings
from core.reaper import Reaper
from core.runtime import make_runtime


def create_app(settings: Settings | None = None, *, run_reaper: bool = True) -> FastAPI:
    settings = settings or get_settings()
    runtime = make_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reaper = Reaper(runtime) if run_reaper else None
        if reaper:
            reaper.start()
        yield
        if reaper:
            reaper.stop()
        await app.state.document_reads.aclose()
        runtime.engine.dispose()

    app = FastAPI(title="modelpress", version="0.1.0", lifespan=lifespan,
                  description="Model compression as a service for PyTorch.")
    app.state.runtime = runtime
    app.state.rate_limiter = RateLimiter(settings.tenant_requests_per_minute, settings.resolved_rate_limit_url,
                                         settings.queue_prefix)
    app.state.api_keys = KeyCache(runtime, settings.api_key_cache_s)
    app.state.document_reads = DocumentReads(runtime.engine)
    app.add_middleware(JsonBodyGuard, max_bytes=settings.max_json_body_bytes)
    install_metrics(app, runtime)   # outside the guard: its 413s are counted too
    app.add_middleware(RequestIdMiddleware)   # added last: outermost, so the guard's answers carry the id too

    @app.exception_handler(ModelpressError)
    async def _user_fixable(request: Request, exc: ModelpressError) -> JSONResponse:
        """Every error a user can fix, raised anywhere below the routers, answered here and only here."""
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    app.include_router(health.router)
    for router in (models.router, datasets.router, jobs.router, events.router, artifacts.router, catalog.router,
                   tenant.router):
        app.include_router(router, responses=ERROR_RESPONSES)

    # The dashboard: static files, no build step.
    app.mount("/ui", StaticFiles(directory=Path(web.__file__).parent / "static", html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    return app
