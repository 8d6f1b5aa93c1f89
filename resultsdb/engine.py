"""Engines for the results database: SQLite by default, Postgres (psycopg 3) in a lab.

The URL comes from the argument, else ``ELMSCALE_DATABASE_URL``, else ``sqlite:///elmscale.db``
in the working directory. ``postgresql://`` URLs are mapped to the psycopg 3 driver; any other backend or
driver, or a string that is not a URL, raises ``InvalidDatabaseUrl``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from resultsdb.errors import DatabaseUnavailable, InvalidDatabaseUrl

DATABASE_URL_ENV = "ELMSCALE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///elmscale.db"
SUPPORTED_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
QUERY_CANCELED = "57014"  # Postgres' SQLSTATE for a statement cancelled, here by its statement_timeout

# Execution option that makes a SQLite transaction take the write lock at BEGIN: a deferred
# transaction that later writes can fail with "database is locked" instead of waiting.
SQLITE_WRITE_OPTION = "elmscale_sqlite_write"


def database_url(url: str | None = None, *, hide_password: bool = False) -> str:
    """The URL to use: the argument, else the environment, else the SQLite default; InvalidDatabaseUrl if malformed."""
    resolved = url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    accepted = "use sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    try:
        parsed = make_url(resolved)
    except (exc.ArgumentError, ValueError):
        raise InvalidDatabaseUrl(f"database URL {resolved!r} is not a URL: {accepted}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in SUPPORTED_DRIVERS:
        shown = parsed.render_as_string(hide_password=True)
        raise InvalidDatabaseUrl(f"database URL {shown!r}: {parsed.drivername!r} is not supported; {accepted}")
    return parsed.render_as_string(hide_password=hide_password)


def missing_sqlite_file(url: str | None = None) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (connecting would create it), else None."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def make_engine(url: str | None = None) -> Engine:
    """Create an engine with pre-ping and a small pool; SQLite gets WAL, foreign keys, busy timeout."""
    resolved = make_url(database_url(url))
    if resolved.get_backend_name() == "sqlite":
        engine = create_engine(resolved, pool_pre_ping=True, pool_size=2, max_overflow=4)
        _configure_sqlite(engine)
        return engine
    return create_engine(  # postgresql+psycopg, the one other driver database_url accepts
        resolved,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=4,
        pool_recycle=1800,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL once (it stays so). The switch needs the file to itself and SQLite does not wait on
    the busy timeout for it: two processes opening a fresh file at once (two first `db upgrade`s) would have one fail
    with "database is locked", so the loser retries within the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to the "begin" hook below instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(SQLITE_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def pool_exhausted(engine: Engine) -> bool:
    """Whether every connection the engine's pool may open is checked out, so that the next one waits."""
    pool = engine.pool
    # QueuePool keeps its overflow limit private; -1 means no limit.
    return isinstance(pool, QueuePool) and 0 <= pool._max_overflow <= pool.checkedout() - pool.size()


@contextmanager
def connect(engine: Engine, *, write: bool = False, statement_timeout_s: float | None = None) -> Iterator[Connection]:
    """A connection in a transaction, committed on success; unreachable databases, a pool whose connections all
    stay busy, and (Postgres) a statement running past `statement_timeout_s` raise DatabaseUnavailable."""
    try:
        connection = engine.connect()
    except exc.DBAPIError as error:
        raise DatabaseUnavailable(f"database {engine.url!r} is unavailable: {error.orig}") from error
    except exc.TimeoutError as error:
        busy = "every database connection stayed busy until the pool's timeout; retry later"
        raise DatabaseUnavailable(busy) from error
    try:
        if write and engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{SQLITE_WRITE_OPTION: True})
        try:
            with connection.begin():
                if statement_timeout_s is not None and engine.dialect.name == "postgresql":
                    timeout_ms = max(1, round(1000 * statement_timeout_s))
                    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                yield connection
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise DatabaseUnavailable(f"lost the connection to {engine.url!r}: {error.orig}") from error
            if statement_timeout_s is not None and getattr(error.orig, "sqlstate", None) == QUERY_CANCELED:
                raise DatabaseUnavailable(
                    f"the query ran past the statement timeout of {statement_timeout_s:g} s; narrow it or retry later"
                ) from error
            raise
    finally:
        connection.close()
