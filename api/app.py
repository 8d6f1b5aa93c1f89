"""The elmscale API: `create_app()` builds the FastAPI application (uvicorn: "api.app:create_app", factory=True)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import dashboard
from api.deps import HeavyReads
from api.errors import install_error_handlers
from api.frames import SweepFrames
from api.routers import analysis, export, feed, health, ingest, predictions, sweeps, trials
from api.security import SecurityHeaders
from api.settings import ApiSettings
from resultsdb import ResultsStore

API_PREFIX = "/api/v1"
DESCRIPTION = """
Results of elmscale sweeps: trials and their metrics, the frontier of metric against parameters (each budget's best
on a fixed-budget sweep), each budget's optimum located between grid points with its interval, every law (frontier,
allocation, surface, tradeoff model) with intervals and predictions, predictions recorded and scored against the
trials that later ran at their budgets, exports for pandas/pyarrow, and a live feed.

Reads are open unless the server runs with `ELMSCALE_API_READ_TOKEN_REQUIRED=1`; writes need a bearer token
(`orchestrator token create NAME`). Errors answer `{"detail": "<what is wrong, naming the field or value>"}`.
"""


def create_app(store: ResultsStore | None = None, settings: ApiSettings | None = None) -> FastAPI:
    """The application; without a store it opens (and on shutdown closes) one on settings.database_url, whose reads
    stop after settings.read_timeout_s.

    Settings default to the environment (ApiSettings.from_env), so `uvicorn.run("api.app:create_app",
    factory=True)` serves ELMSCALE_DATABASE_URL.
    """
    settings = settings or ApiSettings.from_env()
    owned_store = (
        None if store is not None else ResultsStore(settings.database_url, read_timeout_s=settings.read_timeout_s)
    )
    active_store = store or owned_store

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned_store is not None:
            owned_store.close()

    # Swagger UI and ReDoc from the package's own copies, not a CDN: /docs works on an offline lab network.
    app = FastAPIOffline(title="elmscale", version="1", description=DESCRIPTION, lifespan=lifespan, docs_url="/docs")
    app.state.store = active_store
    app.state.settings = settings
    app.state.frames = SweepFrames(active_store)
    app.state.heavy_reads = HeavyReads(settings.heavy_reads, settings.heavy_read_wait_s)
    install_error_handlers(app)
    for router in (sweeps.router, analysis.router, export.router, trials.router, feed.router, ingest.router,
                   predictions.router, health.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    app.add_middleware(SecurityHeaders)
    return app
