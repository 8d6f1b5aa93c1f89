"""Apply the Alembic migrations shipped in the ``migrations`` package to a database URL.

Alembic is configured in code (no alembic.ini), so this works from an installed package and from
any working directory. The version table is ``elmscale_alembic_version`` so a shared Postgres that
hosts other Alembic-managed tools is safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from resultsdb.engine import connect, make_engine, missing_sqlite_file

VERSION_TABLE = "elmscale_alembic_version"
# Postgres advisory lock held by a migration until its transaction ends, so a second `db upgrade` (or a second first
# `submit`) waits and then finds the schema at head instead of creating the same tables again. On SQLite the
# migration's BEGIN IMMEDIATE write lock does the same.
MIGRATION_LOCK = 0x656C_6D6D


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _connection(url: str | None) -> Iterator[Connection]:
    engine = make_engine(url)
    try:
        with connect(engine, write=True) as connection:
            yield connection
    finally:
        engine.dispose()


@contextmanager
def _migration_connection(url: str | None) -> Iterator[Connection]:
    """A connection whose one transaction holds the migration lock; Alembic runs every revision inside it."""
    with _connection(url) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        yield connection


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at `url` (default: the configured one) up to `revision`; concurrent callers take turns."""
    with _migration_connection(url) as connection:
        command.upgrade(_config(connection), revision)


def downgrade(url: str | None, revision: str) -> None:
    """Migrate the database down to `revision` ("base" removes every table)."""
    with _migration_connection(url) as connection:
        command.downgrade(_config(connection), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database is at, or None for a database never migrated (a missing SQLite file stays missing)."""
    if missing_sqlite_file(url):
        return None
    with _connection(url) as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def head() -> str:
    """The newest revision shipped with this package."""
    head_revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_revision is not None, "the migrations package holds no revisions"
    return head_revision


def is_at_head(url: str | None = None) -> bool:
    """Whether the database is migrated to the newest shipped revision."""
    return current(url) == head()
