"""GET /feed: Server-Sent Events of the events table, resumable, filterable, bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from apitesting import API, live_server, sse_events
from sqlalchemy import Engine
from sqlalchemy import event as sqlalchemy_event
from store_helpers import add_finished, allocation, create_sweep

from api.app import create_app
from api.settings import ApiSettings


def read_feed(client, query: str, headers: dict | None = None) -> list[dict]:
    with client.stream("GET", f"{API}/feed?{query}", headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        return sse_events(answer.read().decode())


def test_feed_sends_every_event_in_order_then_ends_at_max_events(client, store):
    create_sweep(store, "live")
    add_finished(store, "live", [(allocation(params_total=100), 2.0)])
    expected = store.events_since(0)
    messages = read_feed(client, f"max_events={len(expected)}")
    assert [(m["id"], m["event"]) for m in messages] == [(e.id, e.kind) for e in expected]
    assert messages[-1]["data"]["trial_id"] and messages[-1]["data"]["payload"]["status"] == "completed"


def test_feed_resumes_after_last_event_id(client, store):
    create_sweep(store, "live")
    add_finished(store, "live", [(allocation(params_total=100), 2.0), (allocation(params_total=200), 1.0)])
    events = store.events_since(0)
    resumed = read_feed(client, "timeout=0.2", headers={"Last-Event-ID": str(events[1].id)})
    assert [m["id"] for m in resumed] == [e.id for e in events[2:]]
    assert [m["id"] for m in read_feed(client, f"after={events[-2].id}&timeout=0.2")] == [events[-1].id]


def test_feed_filters_by_sweep_and_ends_at_timeout_when_idle(client, store):
    create_sweep(store, "one")
    create_sweep(store, "two")
    add_finished(store, "two", [(allocation(params_total=100), 2.0)])
    messages = read_feed(client, "sweep=two&timeout=0.2")
    assert messages and {m["data"]["sweep"] for m in messages} == {"two"}
    last = messages[-1]["id"]
    assert read_feed(client, f"sweep=two&after={last}&timeout=0.1") == []


def test_feed_refuses_unknown_sweep_and_bad_last_event_id(client, store):
    assert client.get(f"{API}/feed?sweep=nope&timeout=0").status_code == 404
    answer = client.get(f"{API}/feed?timeout=0", headers={"Last-Event-ID": "yesterday"})
    assert answer.status_code == 422 and "Last-Event-ID" in answer.json()["detail"]


@pytest.fixture
def live_api(store) -> Iterator[tuple[str, uvicorn.Server]]:
    url = store.engine.url.render_as_string(hide_password=False)
    with live_server(create_app(store, ApiSettings(database_url=url, feed_poll_s=0.02, feed_keep_alive_s=0.1))) as live:
        yield live


def messages_of(lines: Iterator[str], count: int) -> tuple[list[dict], list[str]]:
    """The next `count` messages of an open stream, and the comment lines seen on the way."""
    messages, comments, fields = [], [], {}
    while len(messages) < count:
        line = next(lines)
        if line.startswith(":"):
            comments.append(line)
        elif line:
            key, value = line.split(": ", 1)
            fields[key] = value
        elif fields:
            messages.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
            fields = {}
    return messages, comments


def test_events_committed_while_a_stream_is_open_arrive_on_it_and_idle_streams_get_keep_alives(live_api, store):
    base, _ = live_api
    create_sweep(store, "live")
    existing = store.events_since(0)
    with httpx.stream("GET", f"{base}/feed?sweep=live&timeout=30", timeout=30) as answer:
        lines = answer.iter_lines()
        first, _ = messages_of(lines, len(existing))
        assert [m["id"] for m in first] == [e.id for e in existing]
        comments = []
        while not comments:  # idle for longer than feed_keep_alive_s
            line = next(lines)
            if line.startswith(":"):
                comments.append(line)
        assert comments == [": keep-alive"]

        create_sweep(store, "other", trials=1)  # another sweep's events are not sent here
        store.record_event("note", {"n": 1}, sweep="live")
        store.record_event("note", {"n": 2}, sweep="live")
        later, _ = messages_of(lines, 2)
    assert [(m["event"], m["data"]["payload"]) for m in later] == [("note", {"n": 1}), ("note", {"n": 2})]


def test_a_client_that_disconnects_ends_its_stream_on_the_server(live_api, store):
    base, _ = live_api
    create_sweep(store, "live")
    reads: list[float] = []

    def count_read(*_) -> None:
        reads.append(time.monotonic())

    sqlalchemy_event.listen(Engine, "before_cursor_execute", count_read)  # the app's engine and any other here
    try:
        with httpx.stream("GET", f"{base}/feed?timeout=600", timeout=30) as answer:
            lines = answer.iter_lines()  # kept: a dropped line iterator closes the stream
            messages_of(lines, 1)
            polling_since = time.monotonic()
            deadline = polling_since + 30
            while not any(moment > polling_since for moment in reads) and time.monotonic() < deadline:
                time.sleep(0.02)  # an open stream polls every feed_poll_s
            assert reads and reads[-1] > polling_since
        # After the disconnect the server stops polling for this stream (its own timeout is 600 s away).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and time.monotonic() - reads[-1] < 1.0:
            time.sleep(0.1)
        assert time.monotonic() - reads[-1] >= 1.0, "the stream kept polling after its client left"
    finally:
        sqlalchemy_event.remove(Engine, "before_cursor_execute", count_read)


def test_a_client_reconnecting_with_last_event_id_after_the_stream_ended_gets_exactly_the_rest(live_api, store):
    base, _ = live_api
    create_sweep(store, "live")
    with httpx.stream("GET", f"{base}/feed?max_events=1", timeout=30) as answer:
        lines = answer.iter_lines()
        [seen], _ = messages_of(lines, 1)
        assert list(lines) == []  # max_events reached: the server ends the stream
    store.record_event("note", {"n": 1}, sweep="live")
    store.record_event("note", {"n": 2}, sweep="live")
    rest = store.events_since(seen["id"])
    with httpx.stream("GET", f"{base}/feed?timeout=0.5", headers={"Last-Event-ID": str(seen["id"])},
                      timeout=30) as answer:
        assert [m["id"] for m in sse_events(answer.read().decode())] == [event.id for event in rest]
    assert len(rest) == 2
