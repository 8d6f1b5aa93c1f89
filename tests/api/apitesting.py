"""Helpers for the API tests: a test client on a store, and a parser for Server-Sent Events."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from api.app import API_PREFIX, create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore

API = API_PREFIX


def make_client(store: ResultsStore, **settings) -> TestClient:
    url = store.engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(store, ApiSettings(database_url=url, feed_poll_s=0.02, **settings)))


def sse_events(text: str) -> list[dict]:
    """Messages of an SSE body as dicts with id, event and data (parsed JSON); comments skipped."""
    messages = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            messages.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return messages
