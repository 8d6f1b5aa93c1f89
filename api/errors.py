"""Errors a client can cause, as JSON {"detail": "<one line naming the problem>"} responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc

from analysis import FitError
from resultsdb import ConflictError, DatabaseUnavailable, InvalidQuery, NotFound

logger = logging.getLogger(__name__)
# What a 503 for a passing condition (database down or busy) tells clients and load balancers.
RETRY_AFTER = {"Retry-After": "5"}


class ErrorDetail(BaseModel):
    detail: str


ERROR_RESPONSES = {
    status: {"model": ErrorDetail, "description": description}
    for status, description in {
        401: "Missing, unknown or revoked bearer token",
        404: "Unknown sweep or trial",
        409: "The request contradicts what is stored",
        422: "Invalid parameter, filter or body; the detail names it",
        503: "Database unreachable",
    }.items()
}


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's validation errors on one line, each as `query.limit: Input should be ...`."""
    problems = []
    for problem in errors:
        location = ".".join(str(part) for part in problem.get("loc", ()))
        problems.append(f"{location}: {problem.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map the domain errors of the store, the filters and analysis to 4xx/503 answers; bad input never
    becomes a 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation_errors(error.errors()))

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, error: NotFound) -> JSONResponse:
        return _error(404, str(error))

    @app.exception_handler(InvalidQuery)
    async def invalid_query(_request: Request, error: InvalidQuery) -> JSONResponse:
        return _error(422, str(error))

    @app.exception_handler(ConflictError)
    async def conflict(_request: Request, error: ConflictError) -> JSONResponse:
        return _error(409, str(error))

    @app.exception_handler(FitError)
    async def cannot_fit(_request: Request, error: FitError) -> JSONResponse:
        return _error(422, str(error))

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(_request: Request, error: DatabaseUnavailable) -> JSONResponse:
        # The cause names the database's URL and driver: for the server's log, not for any caller.
        logger.warning("answered 503: %s", error)
        return _error(503, "the database is unavailable or busy; try again shortly", headers=RETRY_AFTER)

    # Last line of defence: a value the schemas let through but the database refuses (e.g. out of its range).
    @app.exception_handler(exc.DataError)
    async def refused_by_database(_request: Request, error: exc.DataError) -> JSONResponse:
        first_line = str(error.orig).strip().splitlines()[0] if error.orig else "value refused"
        return _error(422, f"the database refused a value: {first_line}")
