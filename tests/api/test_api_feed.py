"""GET /feed: Server-Sent Events of the events table, resumable, filterable, bounded."""

from __future__ import annotations

from apitesting import API, sse_events
from store_helpers import add_finished, allocation, create_sweep


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
