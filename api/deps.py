"""Dependencies injected into the routes: the store, the settings, cached frames, the named sweep, and token checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.frames import SweepFrames
from api.routers.common import SweepName
from api.settings import ApiSettings
from resultsdb import DatabaseUnavailable, ResultsStore, SweepInfo

bearer = HTTPBearer(
    auto_error=False,
    description="A token from `orchestrator token create NAME`, sent as `Authorization: Bearer <token>`.",
)


def get_store(request: Request) -> ResultsStore:
    return request.app.state.store


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_frames(request: Request) -> SweepFrames:
    return request.app.state.frames


class HeavyReads:
    """A bulkhead: at most `slots` expensive reads hold database connections at once (see ApiSettings.heavy_reads)."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._wait_s = wait_s

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise DatabaseUnavailable(f"no heavy-read slot free within {self._wait_s:g} s")
        try:
            yield
        finally:
            self._slots.release()


def get_heavy_reads(request: Request) -> HeavyReads:
    return request.app.state.heavy_reads


Store = Annotated[ResultsStore, Depends(get_store)]
Frames = Annotated[SweepFrames, Depends(get_frames)]
HeavyReadsDep = Annotated[HeavyReads, Depends(get_heavy_reads)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_sweep(name: SweepName, store: Store) -> SweepInfo:
    """The sweep of the path's `name` (404 when there is none)."""
    return store.find_sweep(name)


SweepDep = Annotated[SweepInfo, Depends(get_sweep)]


def _token_name(store: ResultsStore, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        detail = "missing bearer token (send Authorization: Bearer <token>)"
    elif (name := store.verify_token(credentials.credentials)) is not None:
        return name
    else:
        detail = "bearer token is unknown or revoked"
    raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def require_writer(store: Store, credentials: Credentials) -> str:
    """The name of a valid token; 401 otherwise."""
    return _token_name(store, credentials)


def require_reader(
    store: Store, credentials: Credentials, settings: Annotated[ApiSettings, Depends(get_settings)]
) -> str | None:
    """Reads are open unless the settings make them token-only."""
    return _token_name(store, credentials) if settings.read_token_required else None


Writer = Annotated[str, Depends(require_writer)]
