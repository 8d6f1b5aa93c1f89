"""Engines: URL resolution, SQLite settings, and a typed error for an unreachable database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from resultsdb import DatabaseUnavailable, ResultsStore, database_url, make_engine


def test_url_comes_from_argument_then_environment_then_a_sqlite_file_in_the_cwd(monkeypatch):
    monkeypatch.delenv("ELMSCALE_DATABASE_URL", raising=False)
    assert database_url() == "sqlite:///elmscale.db"

    monkeypatch.setenv("ELMSCALE_DATABASE_URL", "postgresql://lab@db.example/results")
    assert database_url() == "postgresql+psycopg://lab@db.example/results"
    assert database_url("sqlite:///other.db") == "sqlite:///other.db"


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        settings = [connection.execute(text(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout")]
    engine.dispose()

    assert settings == ["wal", 1, 30_000]


def test_unsupported_backends_are_named():
    with pytest.raises(ValueError, match="'mysql'"):
        make_engine("mysql://localhost/db")


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://postgres@127.0.0.1:1/elmscale", "sqlite:////nonexistent-directory/elmscale.db"],
)
def test_an_unreachable_database_raises_database_unavailable(url):
    with ResultsStore(url) as store, pytest.raises(DatabaseUnavailable):
        store.list_sweeps()
