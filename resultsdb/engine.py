"""Engines for the results database: SQLite by default, Postgres (psycopg 3) in a lab.

The URL comes from the argument, else ``ELMSCALE_DATABASE_URL``, else ``sqlite:///elmscale.db``
in the working directory. ``postgresql://`` URLs are mapped to the psycopg 3 driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from resultsdb.errors import DatabaseUnavailable

DATABASE_URL_ENV = "ELMSCALE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///elmscale.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5

# Execution option that makes a SQLite transaction take the write lock at BEGIN: a deferred
# transaction that later writes can fail with "database is locked" instead of waiting.
SQLITE_WRITE_OPTION = "elmscale_sqlite_write"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else the environment, else the SQLite default."""
    resolved = url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    parsed = make_url(resolved)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str | None = None) -> Engine:
    """Create an engine with pre-ping and a small pool; SQLite gets WAL, foreign keys, busy timeout."""
    resolved = make_url(database_url(url))
    if resolved.get_backend_name() == "sqlite":
        engine = create_engine(resolved, pool_pre_ping=True, pool_size=2, max_overflow=4)
        _configure_sqlite(engine)
        return engine
    if resolved.get_backend_name() == "postgresql":
        return create_engine(
            resolved,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=4,
            pool_recycle=1800,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
    raise ValueError(f"database URL {resolved.drivername!r}: only sqlite and postgresql are supported")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to the "begin" hook below instead of the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(SQLITE_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


@contextmanager
def connect(engine: Engine, *, write: bool = False) -> Iterator[Connection]:
    """A connection in a transaction, committed on success; unreachable databases raise DatabaseUnavailable."""
    try:
        connection = engine.connect()
    except exc.DBAPIError as error:
        raise DatabaseUnavailable(f"database {engine.url!r} is unavailable: {error.orig}") from error
    try:
        if write and engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{SQLITE_WRITE_OPTION: True})
        try:
            with connection.begin():
                yield connection
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise DatabaseUnavailable(f"lost the connection to {engine.url!r}: {error.orig}") from error
            raise
    finally:
        connection.close()
