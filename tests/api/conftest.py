"""Fixtures for the API tests: an app on the `store` fixture's database (SQLite and Postgres), a token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apitesting import make_client
from fastapi.testclient import TestClient

from resultsdb import ResultsStore


@pytest.fixture
def client(store: ResultsStore) -> Iterator[TestClient]:
    with make_client(store) as test_client:
        yield test_client


@pytest.fixture
def auth(store: ResultsStore) -> dict[str, str]:
    """Authorization header of a valid write token."""
    return {"Authorization": f"Bearer {store.create_token('tester')}"}
