"""write_results is idempotent and order-independent, and keeps the trial summaries exact."""

from __future__ import annotations

import random

import pytest
from dbtesting import table_rows
from sqlalchemy import exc
from store_helpers import SWEEP, create_sweep

from resultsdb import DatabaseUnavailable, NotFound, ResultsStore, migrate, writes
from resultsdb import store as store_module


def training_batch(trial_ids: list[str], steps: range, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    return [
        (trial_id, step, {"bpc": rng.uniform(1, 3), "accuracy": rng.uniform(0, 1)}, 1_700_000_000.0 + step)
        for trial_id in trial_ids
        for step in steps
    ]


def expected_summary(batch: list[tuple], trial_id: str, metric: str, mode: str) -> dict:
    points = sorted((step, metrics[metric]) for tid, step, metrics, _ in batch if tid == trial_id)
    values = [value for _, value in points]
    best = min(values) if mode == "min" else max(values)
    return {
        "last": points[-1][1],
        "last_step": points[-1][0],
        "min": min(values),
        "max": max(values),
        "best": best,
        "best_step": next(step for step, value in points if value == best),
    }


def summary_of(store, trial_id: str, metric: str) -> dict:
    stats = ("last", "last_step", "min", "max", "best", "best_step", "final")
    (row,) = store.query_trials(SWEEP, where={"id": trial_id}, fields=[f"{metric}.{stat}" for stat in stats]).rows
    return {field.rpartition(".")[2]: value for field, value in row.items()}


def test_summary_holds_last_min_max_and_best_by_metric_mode(store, trial_ids):
    batch = training_batch(trial_ids, range(20))
    random.Random(1).shuffle(batch)

    store.write_results(batch)

    for trial_id in trial_ids:
        assert summary_of(store, trial_id, "bpc") == expected_summary(batch, trial_id, "bpc", "min") | {"final": None}
        assert summary_of(store, trial_id, "accuracy") == expected_summary(batch, trial_id, "accuracy", "max") | {
            "final": None
        }


def test_delivering_a_batch_twice_changes_nothing(store, trial_ids):
    batch = training_batch(trial_ids, range(10))
    assert store.write_results(batch) == len(trial_ids) * 10 * 2
    rows_after_first = table_rows(store)
    events_after_first = store.events_since(0)

    assert store.write_results(batch) == 0

    assert table_rows(store) == rows_after_first
    assert store.events_since(0) == events_after_first


@pytest.mark.parametrize("order_seed", [1, 2])
def test_out_of_order_overlapping_delivery_leaves_the_same_rows(store, order_seed):
    """Sweep "ordered" gets the points in one batch; sweep "shuffled" the same points shuffled,
    in overlapping batches, some delivered twice."""
    ordered_ids = create_sweep(store, "ordered", trials=6)
    shuffled_ids = create_sweep(store, "shuffled", trials=6)
    points = training_batch(list(range(6)), range(30))
    store.write_results([(ordered_ids[trial], step, metrics, wall) for trial, step, metrics, wall in points])

    rng = random.Random(order_seed)
    shuffled = [(shuffled_ids[trial], step, metrics, wall) for trial, step, metrics, wall in points]
    rng.shuffle(shuffled)
    batches = [shuffled[start : start + 25] for start in range(0, len(shuffled), 20)]
    batches += rng.sample(batches, 3)
    rng.shuffle(batches)
    for batch in batches:
        store.write_results(batch)

    expected = table_rows(store, ordered_ids)
    assert table_rows(store, shuffled_ids) == expected
    assert [len(rows) for rows in expected.values()] == [6 * 30 * 2, 6 * 2]


@pytest.mark.parametrize("later_first", [False, True])
def test_a_redelivered_point_with_a_later_wall_time_wins_in_any_order(store, trial_ids, later_first):
    trial_id = trial_ids[0]
    earlier = (trial_id, 5, {"bpc": 2.0}, 100.0)
    later = (trial_id, 5, {"bpc": 1.5}, 200.0)
    for point in [later, earlier] if later_first else [earlier, later]:
        store.write_results([point])

    assert [(p.step, p.value, p.wall_time) for p in store.series(trial_id, "bpc")] == [(5, 1.5, 200.0)]
    # A superseded value still counts towards min/max/best, so summaries do not depend on order.
    assert summary_of(store, trial_id, "bpc") == {
        "last": 1.5, "last_step": 5, "min": 1.5, "max": 2.0, "best": 1.5, "best_step": 5, "final": None
    }


def test_best_step_is_the_earliest_step_reaching_the_best(store, trial_ids):
    trial_id = trial_ids[0]
    store.write_results([(trial_id, 9, {"bpc": 1.0}, 9.0)])
    store.write_results([(trial_id, 3, {"bpc": 1.0}, 3.0), (trial_id, 12, {"bpc": 1.0}, 12.0)])

    assert summary_of(store, trial_id, "bpc")["best_step"] == 3


def test_nan_is_stored_as_null_and_ignored_by_min_max_best(store, trial_ids):
    trial_id = trial_ids[0]
    store.write_results([(trial_id, 1, {"bpc": 2.0}, 1.0), (trial_id, 2, {"bpc": float("nan")}, 2.0)])

    assert [point.value for point in store.series(trial_id, "bpc")] == [2.0, None]
    assert summary_of(store, trial_id, "bpc") == {
        "last": None, "last_step": 2, "min": 2.0, "max": 2.0, "best": 2.0, "best_step": 1, "final": None
    }


def test_a_first_report_of_nan_does_not_stick_in_min_max_best(store, trial_ids):
    trial_id = trial_ids[0]
    store.write_results([(trial_id, 1, {"bpc": float("nan")}, 1.0)])
    store.write_results([(trial_id, 2, {"bpc": 2.5}, 2.0)])  # a second batch: merged with the stored summary
    store.write_results([(trial_id, 3, {"bpc": 3.0}, 3.0)])

    assert summary_of(store, trial_id, "bpc") == {
        "last": 3.0, "last_step": 3, "min": 2.5, "max": 3.0, "best": 2.5, "best_step": 2, "final": None
    }


def test_infinite_values_round_trip(store, trial_ids):
    store.write_results([(trial_ids[0], 1, {"bpc": float("inf")}, 1.0), (trial_ids[0], 2, {"bpc": -1e308}, 1.0)])

    assert [point.value for point in store.series(trial_ids[0], "bpc")] == [float("inf"), -1e308]


def test_metric_names_with_quotes_and_commas_round_trip(store, trial_ids):
    name = 'valid "bpc", {chars}\\'
    store.write_results([(trial_ids[0], 1, {name: 1.25}, 1.0)])

    assert store.series(trial_ids[0], name)[0].value == 1.25


def test_a_batch_naming_an_unknown_trial_is_refused_whole(store, trial_ids):
    batch = [(trial_ids[0], 1, {"bpc": 2.0}, 1.0), ("0123456789abcdef", 1, {"bpc": 2.0}, 1.0)]

    with pytest.raises(NotFound, match="0123456789abcdef"):
        store.write_results(batch)

    assert table_rows(store) == {"metric_series": [], "trial_summary": []}


def test_a_malformed_result_names_its_position(store, trial_ids):
    with pytest.raises(ValueError, match="result 1"):
        store.write_results([(trial_ids[0], 1, {"bpc": 2.0}, 1.0), (trial_ids[0], {"bpc": 2.0})])


def test_large_batches_are_split_into_bounded_transactions(store, trial_ids, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_POINTS_PER_TRANSACTION", 7)
    batch = training_batch(trial_ids[:2], range(15))

    assert store.write_results(batch) == 60

    assert len([e for e in store.events_since(0) if e.kind == "results"]) == 9  # ceil(60 / 7)
    for trial_id in trial_ids[:2]:
        for metric, mode in (("bpc", "min"), ("accuracy", "max")):
            expected = expected_summary(batch, trial_id, metric, mode) | {"final": None}
            assert summary_of(store, trial_id, metric) == expected


def test_results_events_carry_the_newest_changed_step(store, trial_ids):
    store.write_results([(trial_ids[0], step, {"bpc": 3.0 - step / 10}, float(step)) for step in range(4)])
    store.write_results([(trial_ids[0], 2, {"bpc": 2.8}, 2.0), (trial_ids[1], 0, {"bpc": 2.5}, 0.0)])

    results = [event for event in store.events_since(0, sweep=SWEEP) if event.kind == "results"]

    assert [event.payload for event in results] == [
        {"trials": {trial_ids[0]: {"step": 3, "values": {"bpc": 2.7}}}},
        {"trials": {trial_ids[1]: {"step": 0, "values": {"bpc": 2.5}}}},
    ]


def test_a_key_repeated_within_a_batch_keeps_the_point_of_larger_rank(store, trial_ids):
    trial_id = trial_ids[0]
    batch = [
        (trial_id, 5, {"bpc": 2.0}, 200.0),
        (trial_id, 5, {"bpc": 1.0}, 100.0),  # older
        (trial_id, 6, {"bpc": 1.0}, 300.0),
        (trial_id, 6, {"bpc": 1.5}, 300.0),  # as recent, larger
        (trial_id, 7, {"bpc": 0.5}, 400.0),
        (trial_id, 7, {"bpc": float("nan")}, 400.0),  # as recent, no value
    ]

    assert store.write_results(batch) == 3

    assert [(p.step, p.value, p.wall_time) for p in store.series(trial_id, "bpc")] == [
        (5, 2.0, 200.0), (6, 1.5, 300.0), (7, 0.5, 400.0)
    ]
    assert store.write_results(batch[::-1]) == 0


@pytest.fixture
def postgres_store(postgres_url):
    migrate.upgrade(postgres_url)
    with ResultsStore(postgres_url) as results_store:
        yield results_store


def test_a_batch_postgres_refuses_writes_nothing_and_later_batches_go_through(postgres_store):
    """The first write of a session creates its batch table; the refusal rolls that back too."""
    trial_ids = create_sweep(postgres_store, trials=6)

    with pytest.raises(exc.DataError, match="integer out of range"):
        postgres_store.write_results([(trial_ids[0], 1, {"bpc": 2.0}, 1.0), (trial_ids[0], 2**31, {"bpc": 1.0}, 2.0)])
    with pytest.raises(exc.DataError, match="0x00"):
        postgres_store.write_results([(trial_ids[0], 1, {"b\x00pc": 2.0}, 1.0)])

    assert table_rows(postgres_store) == {"metric_series": [], "trial_summary": []}
    assert postgres_store.write_results([(trial_ids[0], 1, {"bpc": 2.0}, 1.0)]) == 1


def test_a_connection_lost_during_a_write_reports_the_database_unavailable(postgres_store, monkeypatch):
    trial_ids = create_sweep(postgres_store, trials=6)
    ensure_batch_table = writes.ensure_batch_table

    def ensure_batch_table_then_lose_the_connection(connection):
        ensure_batch_table(connection)
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with postgres_store.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({backend}, 5000)")

    monkeypatch.setattr(writes, "ensure_batch_table", ensure_batch_table_then_lose_the_connection)
    with pytest.raises(DatabaseUnavailable):
        postgres_store.write_results([(trial_ids[0], 1, {"bpc": 2.0}, 1.0)])
    monkeypatch.undo()

    assert postgres_store.write_results([(trial_ids[0], 1, {"bpc": 2.0}, 1.0)]) == 1
