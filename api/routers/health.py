"""Liveness: the database answers and its schema is at the newest migration."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Store
from api.schemas import HealthOut
from resultsdb import DatabaseUnavailable, schema_head, schema_revision

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="Database reachable and migrated to the newest revision",
    responses={503: {"model": HealthOut, "description": "Database unreachable or not migrated"}},
)
def healthz(store: Store) -> JSONResponse:
    head = schema_head()
    url = store.engine.url.render_as_string(hide_password=False)
    try:
        revision = schema_revision(url)
    except DatabaseUnavailable as error:
        return _answer(503, HealthOut(status="unavailable", detail=str(error), revision=None, head=head))
    if revision != head:
        detail = f"database at revision {revision}, not {head}: run `orchestrator db upgrade`"
        return _answer(503, HealthOut(status="unavailable", detail=detail, revision=revision, head=head))
    return _answer(200, HealthOut(status="ok", detail="database reachable and migrated", revision=revision, head=head))


def _answer(status: int, health: HealthOut) -> JSONResponse:
    return JSONResponse(health.model_dump(), status_code=status)
