"""Project-wide pytest fixtures: fresh databases on both backends.

Fixtures (function-scoped; every test gets its own database, removed afterwards):
    db_url           URL of a fresh, EMPTY database; the test runs twice, as [sqlite] and [postgres].
    migrated_db_url  like db_url, but migrated to the newest revision (resultsdb.migrate.upgrade).
    store            a resultsdb.ResultsStore on migrated_db_url (both backends).
    postgres_url     URL of a fresh, empty Postgres database (Postgres-only tests).
    sqlite_url       URL of a fresh, empty SQLite file under tmp_path.

Postgres: each test's database is created and dropped through the `postgres` maintenance database
of the server at ELMSCALE_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
When that server does not answer, Postgres tests are skipped with a message, except when the
environment variable CI is set: there they fail, so CI can never silently skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from resultsdb import ResultsStore, migrate

TEST_POSTGRES_URL_ENV = "ELMSCALE_TEST_POSTGRES_URL"
DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _maintenance_engine(server_url: str):
    url = make_url(server_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5})


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The test Postgres server's URL after checking that it answers (skip or, in CI, fail otherwise)."""
    server_url = os.environ.get(TEST_POSTGRES_URL_ENV) or DEFAULT_TEST_POSTGRES_URL
    engine = _maintenance_engine(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the server means the same here
        message = (
            f"Postgres at {make_url(server_url)!r} is unreachable ({type(error).__name__}); "
            f"set {TEST_POSTGRES_URL_ENV} to a server that answers"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return server_url


@pytest.fixture(scope="session")
def _postgres_dropper(postgres_server_url: str) -> Iterator[tuple[ThreadPoolExecutor, list[Future]]]:
    """Drops test databases in the background: a DROP DATABASE waits for a checkpoint (about 1 s)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-db") as dropper:
        drops: list[Future] = []
        yield dropper, drops
    for drop in drops:
        drop.result()


def _drop_database(server_url: str, name: str) -> None:
    engine = _maintenance_engine(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str, _postgres_dropper) -> Iterator[str]:
    name = f"elmscale_test_{uuid.uuid4().hex[:12]}"
    engine = _maintenance_engine(postgres_server_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    dropper, drops = _postgres_dropper
    drops.append(dropper.submit(_drop_database, postgres_server_url, name))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'elmscale.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    migrate.upgrade(db_url)
    return db_url


@pytest.fixture
def store(migrated_db_url: str) -> Iterator[ResultsStore]:
    with ResultsStore(migrated_db_url) as results_store:
        yield results_store
