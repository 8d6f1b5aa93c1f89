"""query_trials filters, sorts, pages and projects; series downsamples; summary_frame pivots."""

from __future__ import annotations

import base64
import json
import warnings

import pytest
from store_helpers import SWEEP, allocation, create_sweep, numbered_allocation

from resultsdb import NotFound, Range, UnknownMetric


@pytest.fixture
def scored_ids(store, trial_ids) -> list[str]:
    """Trials 0..4 report bpc = 3.0 - 0.25 * index at step 10; trial 5 reports nothing."""
    store.write_results([(trial_id, 10, {"bpc": 3.0 - 0.25 * index}, 1.0)
                         for index, trial_id in enumerate(trial_ids[:5])])
    return trial_ids


def ids_of(page) -> list[str]:
    return [row["id"] for row in page.rows]


def test_filters_combine_ranges_sets_status_and_metric_thresholds(store, scored_ids):
    store.set_trial_status(scored_ids[4], "completed")
    store.set_trial_status(scored_ids[1], "failed", error="OOM")

    assert ids_of(store.query_trials(SWEEP, where={"budget": Range(low=200_000)}, sort="id")) == sorted(
        trial_id for index, trial_id in enumerate(scored_ids) if numbered_allocation(index)["budget"] >= 200_000
    )
    assert set(ids_of(store.query_trials(SWEEP, where={"d_m": {5, 20}}))) == {
        scored_ids[0],
        scored_ids[3],
        scored_ids[4],
    }
    assert set(ids_of(store.query_trials(SWEEP, where={"status": {"completed", "failed"}}))) == {
        scored_ids[1],
        scored_ids[4],
    }
    assert set(ids_of(store.query_trials(SWEEP, where={"bpc.best": Range(high=2.5)}))) == {
        scored_ids[2],
        scored_ids[3],
        scored_ids[4],
    }
    assert ids_of(
        store.query_trials(
            SWEEP, where={"bpc.best": Range(high=2.5), "status": "pending", "rho_rec": Range(0.25, 0.35)}
        )
    ) == [scored_ids[3]]


def test_sort_by_summary_metric_puts_trials_without_results_last(store, scored_ids):
    ascending = store.query_trials(SWEEP, sort="bpc.best", fields=["id", "bpc.best"])
    descending = store.query_trials(SWEEP, sort="-bpc.best", fields=["id", "bpc.best"])

    assert ids_of(ascending) == [scored_ids[i] for i in (4, 3, 2, 1, 0, 5)]
    assert ids_of(descending) == [scored_ids[i] for i in (0, 1, 2, 3, 4, 5)]
    assert ascending.rows[0] == {"id": scored_ids[4], "bpc.best": 2.0}
    assert ascending.rows[-1] == {"id": scored_ids[5], "bpc.best": None}


@pytest.mark.parametrize("sort", ["id", "-params_total", "bpc.best", "-bpc.best", "budget", "-started_at"])
def test_cursor_pages_visit_every_trial_once_in_sort_order(store, scored_ids, sort):
    store.set_trial_status(scored_ids[2], "running")
    everything = ids_of(store.query_trials(SWEEP, sort=sort, limit=None))

    paged, cursor = [], None
    for _ in range(len(scored_ids) + 1):  # bounded: a cursor that pages back over rows would loop for ever
        page = store.query_trials(SWEEP, sort=sort, limit=4 if sort == "id" else 1, cursor=cursor)
        paged += ids_of(page)
        if (cursor := page.next_cursor) is None:
            break

    assert paged == everything
    assert sorted(paged) == sorted(scored_ids)


@pytest.mark.parametrize("sort", ["created_at", "-created_at"])
def test_time_cursors_keep_fractions_of_a_second(store, sort):
    # Trials created within a second or so: a cursor cut to whole seconds would page back over them.
    store.create_sweep("fast", task="enwik8", metric="bpc", mode="min", spec_text="name: fast")
    created = [trial_id for index in range(5) for trial_id in store.add_trials("fast", [numbered_allocation(index)])]

    paged, cursor = [], None
    for _ in range(len(created) + 1):
        page = store.query_trials("fast", sort=sort, limit=1, cursor=cursor)
        paged += ids_of(page)
        if (cursor := page.next_cursor) is None:
            break

    assert sorted(paged) == sorted(created) and len(paged) == len(created)


def test_fields_choose_the_columns_returned(store, scored_ids):
    page = store.query_trials(SWEEP, fields=["params_total", "config", "bpc.last", "created_at"], limit=1)

    (row,) = page.rows
    assert list(row) == ["params_total", "config", "bpc.last", "created_at"]
    assert row["config"] in [numbered_allocation(index)["config"] for index in range(6)]
    assert row["created_at"].tzinfo is not None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"fields": ["id", "bogus"]}, "field 'bogus'"),
        ({"where": {"bpc.median": Range(high=1)}}, "field 'bpc.median'"),
        ({"sort": "config"}, "sort 'config'"),
        ({"cursor": "not-a-cursor"}, "cursor 'not-a-cursor'"),
        ({"limit": 0}, "limit 0"),
    ],
)
def test_bad_query_arguments_name_the_offending_value(store, scored_ids, arguments, message):
    with pytest.raises(ValueError, match=message):
        store.query_trials(SWEEP, **arguments)


def test_a_cursor_cannot_be_reused_with_another_sort(store, scored_ids):
    cursor = store.query_trials(SWEEP, sort="budget", limit=2).next_cursor

    with pytest.raises(ValueError, match="^cursor was issued for sort 'budget', not '-budget'$"):
        store.query_trials(SWEEP, sort="-budget", cursor=cursor)


def test_querying_an_unknown_sweep_raises_not_found(store):
    with pytest.raises(NotFound, match="sweep 'nope'"):
        store.query_trials("nope")


def test_series_is_downsampled_to_at_most_k_points_keeping_the_last(store, trial_ids):
    store.write_results([(trial_ids[0], step, {"loss": float(step)}, float(step)) for step in range(1, 1001)])

    thinned = store.series(trial_ids[0], "loss", max_points=30)
    whole = store.series(trial_ids[0], "loss", max_points=5000)

    assert 25 <= len(thinned) <= 30
    assert thinned[-1].step == 1000
    assert [point.step for point in thinned] == sorted({point.step for point in thinned})
    assert [point.step for point in whole] == list(range(1, 1001))
    with pytest.raises(UnknownMetric, match="metric 'nothing' is not reported"):
        store.series(trial_ids[0], "nothing")


def test_summary_frame_has_one_row_per_trial_with_metric_columns(store, scored_ids):
    store.write_results([(scored_ids[0], 20, {"accuracy": 0.5}, 2.0)])
    store.set_trial_status(scored_ids[0], "completed", final={"bpc": 2.9})

    frame = store.summary_frame(SWEEP)

    assert list(frame["id"]) == sorted(scored_ids)  # in the order of the trials' ids
    assert {"budget", "n_hidden", "params_total", "bpc.best", "bpc.final", "accuracy.last"} <= set(frame.columns)
    row = frame.set_index("id").loc[scored_ids[0]]
    assert (row["bpc.best"], row["bpc.final"], row["accuracy.best"], row["status"]) == (3.0, 2.9, 0.5, "completed")
    assert frame.set_index("id")["bpc.best"].isna().sum() == 1


def test_values_a_column_cannot_hold_match_nothing_without_an_error(store, scored_ids):
    """d_m is a 32-bit column and budget a 64-bit one: a value just past either range equals no stored value (and
    the databases would refuse it as a parameter); the ends of each range are ordinary values."""
    with_d_m_5 = {trial_id for index, trial_id in enumerate(scored_ids) if numbered_allocation(index)["d_m"] == 5}
    with_budget_1e5 = {trial_id for index, trial_id in enumerate(scored_ids)
                       if numbered_allocation(index)["budget"] == 100_000}
    for field, limit in [("d_m", 2**31), ("budget", 2**63)]:
        for value in (limit - 1, limit, -limit, -limit - 1, 2**70):
            assert ids_of(store.query_trials(SWEEP, where={field: value})) == [], (field, value)
        assert ids_of(store.query_trials(SWEEP, where={field: {limit, -limit - 1}})) == []
    assert set(ids_of(store.query_trials(SWEEP, where={"d_m": {5, 2**31}}))) == with_d_m_5
    assert set(ids_of(store.query_trials(SWEEP, where={"budget": {100_000, 2**63, None}}))) == with_budget_1e5


def test_an_open_range_and_a_bare_value_filter_as_expected(store, scored_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated empty conjunction for a range without bounds
        assert sorted(ids_of(store.query_trials(SWEEP, where={"budget": Range()}))) == sorted(scored_ids)
    assert ids_of(store.query_trials(SWEEP, where={"n_hidden": 110})) == [scored_ids[1]]
    assert ids_of(store.query_trials(SWEEP, where={"status": "completed"})) == []
    with pytest.raises(ValueError, match=r"filter 'budget': expected a Range, a set of values or one value, got None"):
        store.query_trials(SWEEP, where={"budget": None})


def test_a_metric_whose_name_holds_dots_is_read_by_its_last_dot(store, trial_ids):
    store.write_results([(trial_ids[0], 5, {"valid.bpc": 1.5}, 1.0), (trial_ids[1], 5, {"valid.bpc": 1.25}, 1.0)])

    page = store.query_trials(SWEEP, where={"valid.bpc.best": Range(high=2)}, sort="valid.bpc.best",
                              fields=["id", "valid.bpc.best", "valid.bpc.last_step"])

    assert page.rows == [{"id": trial_ids[1], "valid.bpc.best": 1.25, "valid.bpc.last_step": 5},
                         {"id": trial_ids[0], "valid.bpc.best": 1.5, "valid.bpc.last_step": 5}]


def test_an_unknown_field_is_answered_with_the_fields_there_are(store, scored_ids):
    with pytest.raises(ValueError) as raised:
        store.query_trials(SWEEP, fields=["bpc.median"])

    assert "expected a trial column (id, status, budget, " in str(raised.value)
    assert "'<metric>.<stat>' with stat one of last, last_step, min, max, best, best_step, final" in str(raised.value)


def forged_cursor(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize("payload", [[1, 2], ["id", 1, 5], ["id", 1, "x", "y"], {"a": 1, "b": 2, "c": 3}, "id"])
def test_a_cursor_that_is_json_but_not_a_cursor_is_refused(store, scored_ids, payload):
    with pytest.raises(ValueError, match=r"cursor '.*': not a cursor returned by query_trials"):
        store.query_trials(SWEEP, sort="id", cursor=forged_cursor(payload))


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("budget", True), ("budget", 2.5), ("budget", "abc"), ("budget", {"datetime": "2026-01-01T00:00:00"}),
        ("d_m", 2**31), ("budget", 2**63), ("bpc.best", "abc"), ("bpc.best", float("inf")), ("bpc.best", False),
        ("status", "bogus"), ("status", 3), ("created_at", 5), ("created_at", "2026-01-01"),
    ],
)
def test_a_cursor_whose_value_the_sort_column_cannot_hold_is_refused(store, scored_ids, sort, value):
    cursor = forged_cursor([sort, value, scored_ids[0]])

    with pytest.raises(ValueError, match=rf"cursor '.*': .* is not a value of {sort}$"):
        store.query_trials(SWEEP, sort=sort, cursor=cursor)


def test_a_status_cursor_pages_through_the_statuses(store, scored_ids):
    store.set_trial_status(scored_ids[3], "completed")
    page = store.query_trials(SWEEP, sort="status", limit=1)

    rest = store.query_trials(SWEEP, sort="status", cursor=page.next_cursor)

    assert ids_of(page) == [scored_ids[3]]  # "completed" before "pending" (both backends)
    assert ids_of(page) + ids_of(rest) == ids_of(store.query_trials(SWEEP, sort="status"))


def test_a_metric_only_another_sweep_reports_is_unknown_here(store, scored_ids):
    [elsewhere] = create_sweep(store, "second", trials=1)
    store.write_results([(elsewhere, 1, {"only_there": 1.0}, 1.0)])

    assert store.query_trials("second", sort="only_there.best", fields=["id", "only_there.best"]).rows == [
        {"id": elsewhere, "only_there.best": 1.0}]  # a sweep of one trial has its summaries too
    with pytest.raises(UnknownMetric, match="metric 'only_there' is not reported"):
        store.query_trials(SWEEP, sort="only_there.best")


def test_a_metric_frame_of_a_metric_the_sweep_does_not_have_is_refused(store, scored_ids):
    assert store.metric_frame(SWEEP, "accuracy").trials["metric"].isna().all()  # declared, not yet reported

    with pytest.raises(UnknownMetric, match="metric 'bogus' is not reported"):
        store.metric_frame(SWEEP, "bogus")


def test_the_ends_of_a_columns_range_match_the_trials_that_hold_them(store):
    """A 32-bit seed of -2**31 and a 64-bit budget past 2**31 are values those columns hold: they must match."""
    create_sweep(store, "wide")
    [low_seed, big_budget] = store.add_trials("wide", [allocation(params_total=1000, seed=-2**31, budget=1000),
                                                       allocation(params_total=1000, seed=5, budget=3_000_000_000)])

    assert ids_of(store.query_trials("wide", where={"seed": -2**31})) == [low_seed]
    assert ids_of(store.query_trials("wide", where={"seed": {-2**31, 2**31}})) == [low_seed]
    assert ids_of(store.query_trials("wide", where={"budget": 3_000_000_000})) == [big_budget]
    assert ids_of(store.query_trials("wide", where={"budget": {3_000_000_000, 2**63}})) == [big_budget]


def test_a_series_is_its_own_trial_and_metric_thinned_by_step_whatever_the_write_order(store, trial_ids):
    steps = list(range(1000, 0, -1))  # written newest first
    store.write_results([(trial_ids[0], step, {"loss": float(step), "other": -1.0}, float(step)) for step in steps])
    store.write_results([(trial_ids[1], step, {"loss": 0.0}, 0.0) for step in range(1, 2001)])

    thinned = store.series(trial_ids[0], "loss", max_points=10)

    assert [(point.step, point.value) for point in thinned] == [(step, float(step)) for step in range(100, 1001, 100)]
    assert [point.step for point in store.series(trial_ids[0], "loss", max_points=7)] == [
        *range(143, 1000, 143), 1000]  # stride ceil(1000 / 7) = 143, and the last point
    with pytest.raises(NotFound, match="^trial '0123456789abcdef' does not exist$"):
        store.series("0123456789abcdef", "loss")
