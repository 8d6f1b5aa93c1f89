"""Liveness: the database answers, its schema is at the newest migration, and the service has a free connection."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Store
from api.errors import RETRY_AFTER
from api.schemas import HealthOut
from resultsdb import DatabaseUnavailable, schema_head, schema_revision

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)
# The cause names the database's host, user and driver: it goes to the server log, not to callers (no token can be
# checked while the database is down, so no caller could be told apart).
# A pool full for an instant is load, not trouble: only one that stays full this long makes /healthz answer 503.
POOL_BUSY_S = 1.0
UNAVAILABLE_DETAIL = "database unavailable: no connection to it (the server log has the cause)"


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="Database reachable and migrated to the newest revision",
    responses={503: {"model": HealthOut, "description": "Database unreachable, not migrated, or all connections busy"}},
)
def healthz(store: Store) -> JSONResponse:
    head = schema_head()
    url = store.engine.url.render_as_string(hide_password=False)
    try:
        revision = schema_revision(url)
    except DatabaseUnavailable as error:
        logger.warning("healthz: %s", error)
        return _answer(503, HealthOut(status="unavailable", detail=UNAVAILABLE_DETAIL, revision=None, head=head),
                       RETRY_AFTER)
    if revision != head:
        detail = f"database at revision {revision}, not {head}: run `orchestrator db upgrade`"
        return _answer(503, HealthOut(status="unavailable", detail=detail, revision=revision, head=head))
    if store.pool_exhausted(for_s=POOL_BUSY_S):
        detail = "every connection of the service's database pool stays busy: requests wait for one or get 503"
        return _answer(503, HealthOut(status="unavailable", detail=detail, revision=revision, head=head), RETRY_AFTER)
    return _answer(200, HealthOut(status="ok", detail="database reachable and migrated", revision=revision, head=head))


def _answer(status: int, health: HealthOut, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(health.model_dump(), status_code=status, headers=headers)
