"""Fixtures for the API tests: an app on the `store` fixture's database (SQLite and Postgres), a token."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore

sys.path.insert(0, str(Path(__file__).parent))

API = "/api/v1"


def make_client(store: ResultsStore, **settings) -> TestClient:
    url = store.engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(store, ApiSettings(database_url=url, feed_poll_s=0.02, **settings)))


@pytest.fixture
def client(store: ResultsStore) -> Iterator[TestClient]:
    with make_client(store) as test_client:
        yield test_client


@pytest.fixture
def auth(store: ResultsStore) -> dict[str, str]:
    """Authorization header of a valid write token."""
    return {"Authorization": f"Bearer {store.create_token('tester')}"}
