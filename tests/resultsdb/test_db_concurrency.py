"""Concurrent writers: 8 processes writing overlapping batches at once leave exactly the expected rows."""

from __future__ import annotations

import multiprocessing

from dbtesting import table_rows, write_in_batches
from store_helpers import create_sweep

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
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)

    assert [writer.exitcode for writer in writers] == [0] * WRITERS
    expected = table_rows(store, reference_ids)
    assert table_rows(store, concurrent_ids) == expected
    assert [len(rows) for rows in expected.values()] == [8 * 60 * 2, 8 * 2]
    result_events = [event for event in store.events_since(0, sweep="concurrent") if event.kind == "results"]
    assert 1 <= len(result_events) <= WRITERS * len(points) // 40
