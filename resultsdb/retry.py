"""Write transactions that retry what a concurrent writer can cause: deadlocks, serialization failures, and
SQLite's "database is locked", with bounded, jittered backoff. Any other error is raised at once."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, exc

from resultsdb.engine import connect

MAX_ATTEMPTS = 6
# Postgres serialization_failure and deadlock_detected.
RETRYABLE_SQLSTATES = {"40001", "40P01"}

Result = TypeVar("Result")


def is_retryable(error: exc.DBAPIError) -> bool:
    if getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig)


def backoff_s(attempt: int) -> float:
    """20 ms doubling up to 1 s, times a random factor in [0.5, 1.5) so that colliding writers spread out."""
    return min(1.0, 0.02 * 2**attempt) * (0.5 + random.random())


def in_write_transaction(engine: Engine, work: Callable[..., Result], *args: Any) -> Result:
    """work(connection, *args) in one write transaction, committed on return; retried from the start."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            with connect(engine, write=True) as connection:
                return work(connection, *args)
        except exc.DBAPIError as error:
            if attempt == MAX_ATTEMPTS - 1 or not is_retryable(error):
                raise
        time.sleep(backoff_s(attempt))
    raise AssertionError("unreachable")
