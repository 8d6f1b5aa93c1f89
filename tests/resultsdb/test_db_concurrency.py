"""Concurrent writers: 8 processes writing overlapping batches at once leave exactly the expected rows, and a reader
polling for new events meanwhile misses none."""

from __future__ import annotations

import multiprocessing
import threading

from dbtesting import table_rows, write_in_batches
from store_helpers import create_sweep

from resultsdb import ResultsStore, migrate
from resultsdb.writes import append_events

WRITERS = 8


def test_eight_processes_writing_overlapping_batches_leave_exactly_the_expected_rows(store, migrated_db_url):
    reference_ids = create_sweep(store, "reference", trials=8)
    concurrent_ids = create_sweep(store, "concurrent", trials=8)
    points = [
        (trial, step, {"bpc": 3.0 - step / 100 + trial / 10, "accuracy": (step * 7 + trial) % 13 / 13}, 100.0 + step)
        for trial in range(8)
        for step in range(60)
    ]
    store.write_results([(reference_ids[trial], *rest) for trial, *rest in points])

    # Every writer delivers all points, in its own order: each key is written 8 times concurrently.
    concurrent_points = [(concurrent_ids[trial], *rest) for trial, *rest in points]
    # fork: the writers start in milliseconds; no pooled connection may be inherited, hence dispose.
    store.engine.dispose()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WRITERS)
    writers = [
        context.Process(target=write_in_batches, args=(migrated_db_url, concurrent_points, seed, 40, start))
        for seed in range(WRITERS)
    ]
    seen: list[int] = []
    writing = threading.Event()
    writing.set()

    def poll_events() -> None:
        """A live-feed reader: "events after the last id I saw", over and over while the writers commit."""
        while True:
            done = not writing.is_set()
            seen.extend(event.id for event in store.events_since(seen[-1] if seen else 0, sweep="concurrent"))
            if done:
                return

    for writer in writers:
        writer.start()
    reader = threading.Thread(target=poll_events)
    reader.start()
    for writer in writers:
        writer.join(timeout=120)
    writing.clear()
    reader.join(timeout=60)

    assert [writer.exitcode for writer in writers] == [0] * WRITERS
    expected = table_rows(store, reference_ids)
    assert table_rows(store, concurrent_ids) == expected
    assert [len(rows) for rows in expected.values()] == [8 * 60 * 2, 8 * 2]
    events = store.events_since(0, sweep="concurrent", limit=10_000)
    result_events = [event for event in events if event.kind == "results"]
    assert 1 <= len(result_events) <= WRITERS * len(points) // 40
    # Ids grow in commit order: the polling reader saw every event, none committed behind its back.
    assert seen == [event.id for event in events]


def test_an_event_committed_late_is_not_skipped_by_a_polling_reader(postgres_url):
    """Postgres hands out event ids before commit: a writer that took id 1 may commit after another's id 2."""
    migrate.upgrade(postgres_url)
    with ResultsStore(postgres_url) as store, store.engine.connect() as slow_writer:
        append_events(slow_writer, [{"kind": "note", "payload": {"writer": "slow"}}])  # id taken, not committed
        fast_writer = threading.Thread(target=store.record_event, args=("note", {"writer": "fast"}))
        fast_writer.start()
        fast_writer.join(timeout=2)  # waits behind the slow writer's transaction, or (unordered) commits now
        seen = [event.id for event in store.events_since(0)]
        slow_writer.commit()
        fast_writer.join(timeout=30)
        seen += [event.id for event in store.events_since(seen[-1] if seen else 0)]

        everything = store.events_since(0)
        assert [event.payload["writer"] for event in everything] == ["slow", "fast"]
        assert seen == [event.id for event in everything]
