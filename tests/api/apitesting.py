"""Helpers for the API tests: a test client on a store, the app under a real uvicorn server, and a parser for
Server-Sent Events."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import API_PREFIX, create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore

API = API_PREFIX


def make_client(store: ResultsStore, **settings) -> TestClient:
    url = store.engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(store, ApiSettings(database_url=url, feed_poll_s=0.02, **settings)))


@contextmanager
def live_server(app: FastAPI) -> Iterator[tuple[str, uvicorn.Server]]:
    """`app` under a real uvicorn server on 127.0.0.1 (a thread of this process): the API's base URL and the server.
    Streams arrive as sent and concurrent requests are served concurrently, as in production."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{API}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def sse_events(text: str) -> list[dict]:
    """Messages of an SSE body as dicts with id, event and data (parsed JSON); comments skipped."""
    messages = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            messages.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return messages
