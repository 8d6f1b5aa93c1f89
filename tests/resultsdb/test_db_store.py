"""Sweeps, trial status changes, the event feed and API tokens through ResultsStore."""

from __future__ import annotations

import pytest
from store_helpers import SWEEP, create_sweep, numbered_allocation

from resultsdb import ConflictError, NotFound, ResultsStore, trial_id


def test_trial_ids_are_deterministic_and_independent_of_key_order():
    config = {"d_m": 5, "n_hidden": 100, "optimizer": {"lr": 5e-4, "name": "adam"}}
    reordered = {"optimizer": {"name": "adam", "lr": 5e-4}, "n_hidden": 100, "d_m": 5}

    assert trial_id("s", config, 0) == trial_id("s", reordered, 0)
    assert len({trial_id("s", config, 0), trial_id("s", config, 1), trial_id("t", config, 0)}) == 3
    assert len(trial_id("s", config, 0)) == 16


def test_create_sweep_is_idempotent_for_the_same_spec_and_refuses_another(store):
    first = store.create_sweep(SWEEP, task="enwik8", metric="bpc", mode="min", spec_text="a: 1")
    again = store.create_sweep(SWEEP, task="enwik8", metric="bpc", mode="min", spec_text="a: 1")

    assert again == first
    assert first.metric_modes == {"bpc": "min"}
    with pytest.raises(ConflictError, match="sweep 'pareto' already exists with a different spec"):
        store.create_sweep(SWEEP, task="enwik8", metric="bpc", mode="min", spec_text="a: 2")
    with pytest.raises(ValueError, match="mode 'lowest'"):
        store.create_sweep("other", task="enwik8", metric="bpc", mode="lowest", spec_text="a: 1")


def test_add_trials_is_idempotent_and_keeps_the_allocation_columns(store, trial_ids):
    again = store.add_trials(SWEEP, [numbered_allocation(index) for index in range(6)])

    assert again == trial_ids
    assert trial_ids[2] == trial_id(SWEEP, numbered_allocation(2)["config"], numbered_allocation(2)["seed"])
    (row,) = store.query_trials(SWEEP, where={"id": trial_ids[2]}, fields=["n_hidden", "rho_rec", "status"]).rows
    assert row == {"n_hidden": 120, "rho_rec": 0.2, "status": "pending"}
    assert store.get_sweep(SWEEP).trial_counts == {"pending": 6}
    assert [event.kind for event in store.events_since(0)] == ["sweep_created", "trials_added"]


def test_add_trials_names_a_missing_field(store, trial_ids):
    incomplete = numbered_allocation(7)
    del incomplete["k_c"]

    with pytest.raises(ValueError, match="trial 1: missing field 'k_c'"):
        store.add_trials(SWEEP, [numbered_allocation(6), incomplete])


def test_trial_lifecycle_counts_attempts_and_appends_events_only_on_change(store, trial_ids):
    trial = trial_ids[0]

    assert store.set_trial_status(trial, "running", node="node-1", device="cuda:0")
    assert not store.set_trial_status(trial, "running")
    assert store.set_trial_status(trial, "failed", error="CUDA out of memory")
    assert store.set_trial_status(trial, "running", node="node-2")
    assert store.set_trial_status(trial, "completed", final={"bpc": 1.42})

    fields = ["status", "attempts", "error", "node", "device", "started_at", "ended_at", "bpc.final"]
    (row,) = store.query_trials(SWEEP, where={"id": trial}, fields=fields).rows
    assert {key: row[key] for key in fields[:5]} == {
        "status": "completed", "attempts": 2, "error": None, "node": "node-2", "device": "cuda:0"
    }
    assert row["started_at"] <= row["ended_at"]
    assert row["bpc.final"] == 1.42
    trial_events = [(event.kind, event.payload.get("attempts")) for event in store.events_since(0) if event.trial_id]
    assert trial_events == [("trial_running", 1), ("trial_failed", 1), ("trial_running", 2), ("trial_completed", 2)]
    assert store.get_sweep(SWEEP).trial_counts == {"completed": 1, "pending": 5}


def test_status_changes_name_what_is_wrong(store, trial_ids):
    with pytest.raises(ValueError, match="trial status 'done'"):
        store.set_trial_status(trial_ids[0], "done")
    with pytest.raises(NotFound, match="trial 'ffffffffffffffff'"):
        store.set_trial_status("ffffffffffffffff", "running")
    with pytest.raises(NotFound, match="sweep 'nope'"):
        store.set_sweep_status("nope", "running")


def test_list_sweeps_counts_trials_by_status(store, trial_ids):
    create_sweep(store, "second", trials=2)
    store.set_trial_status(trial_ids[0], "running")
    assert store.set_sweep_status(SWEEP, "running")
    assert store.set_sweep_status(SWEEP, "completed")

    sweeps = {sweep.name: sweep for sweep in store.list_sweeps()}

    assert sweeps[SWEEP].trial_counts == {"pending": 5, "running": 1}
    assert sweeps["second"].trial_counts == {"pending": 2}
    assert (sweeps[SWEEP].status, sweeps["second"].status) == ("completed", "pending")
    assert sweeps[SWEEP].finished_at is not None and sweeps["second"].finished_at is None
    assert store.get_sweep("missing") is None


def test_events_since_pages_by_id_and_filters_by_sweep(store, trial_ids):
    create_sweep(store, "second", trials=1)
    store.record_event("note", {"text": "hello"}, sweep=SWEEP, trial_id=trial_ids[0])
    store.record_event("cluster_up")

    everything = store.events_since(0)
    ids = [event.id for event in everything]

    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [event.kind for event in everything] == [
        "sweep_created", "trials_added", "sweep_created", "trials_added", "note", "cluster_up"
    ]
    assert [event.kind for event in store.events_since(ids[1], limit=2)] == ["sweep_created", "trials_added"]
    assert [(event.kind, event.sweep) for event in store.events_since(0, sweep=SWEEP)] == [
        ("sweep_created", SWEEP), ("trials_added", SWEEP), ("note", SWEEP)
    ]
    assert everything[-1].sweep is None and everything[-2].payload == {"text": "hello"}
    assert (everything[-2].trial_id, everything[-1].trial_id) == (trial_ids[0], None)
    assert all(event.created_at.tzinfo is not None for event in everything)
    assert [event.id for event in store.events_since(0, kind="trials_added")] == [ids[1], ids[3]]
    assert [event.id for event in store.events_since(ids[1], sweep=SWEEP, kind="note")] == [ids[4]]
    assert store.events_since(ids[-1]) == []


def test_last_event_id_is_0_before_the_first_event(store):
    assert store.last_event_id() == 0 and store.events_since(0) == []


def test_last_event_id_is_the_newest_event_of_the_sweep_or_of_all(store, trial_ids):
    create_sweep(store, "second", trials=1)
    noted = store.record_event("note", sweep=SWEEP)
    latest = store.record_event("cluster_up")

    assert store.last_event_id(SWEEP) == noted
    assert store.last_event_id() == latest
    assert store.last_event_id("second") == max(event.id for event in store.events_since(0, sweep="second"))
    with pytest.raises(NotFound, match="sweep 'nope' does not exist"):
        store.last_event_id("nope")


def test_find_trial_gives_its_columns_sweep_and_the_summaries_of_declared_metrics(store, trial_ids):
    store.write_results([(trial_ids[1], step, {"bpc": 2.0 - step / 10, "undeclared": 1.0}, float(step))
                         for step in range(3)])
    store.set_trial_status(trial_ids[1], "completed", final={"accuracy": 0.5})
    store.write_results([(trial_ids[2], 7, {"bpc": 0.5}, 7.0)])  # another trial's summaries are not this one's

    trial = store.find_trial(trial_ids[1])

    assert (trial.id, trial.sweep, trial.sweep_metric, trial.status) == (trial_ids[1], SWEEP, "bpc", "completed")
    assert (trial.n_hidden, trial.config) == (110, numbered_allocation(1)["config"])
    assert trial.created_at.tzinfo is not None and trial.ended_at is not None
    assert list(trial.metrics) == ["accuracy", "bpc"]  # by name
    assert (trial.metrics["bpc"].best, trial.metrics["bpc"].best_step, trial.metrics["bpc"].last_step) == (1.8, 2, 2)
    assert trial.metrics["accuracy"].final == 0.5 and trial.metrics["accuracy"].best is None
    with pytest.raises(NotFound, match="trial '0123456789abcdef' does not exist") as missing:
        store.find_trial("0123456789abcdef")
    assert (missing.value.kind, missing.value.key) == ("trial", "0123456789abcdef")
    assert store.find_sweep(SWEEP) == store.get_sweep(SWEEP)
    with pytest.raises(NotFound, match="sweep 'nope' does not exist"):
        store.find_sweep("nope")


def test_tokens_verify_until_revoked_and_store_only_a_hash(store, db_url):
    token = store.create_token("dashboard")

    assert store.verify_token(token) == "dashboard"
    assert store.verify_token(token + "x") is None
    with pytest.raises(ConflictError, match="token name 'dashboard'"):
        store.create_token("dashboard")
    assert store.revoke_token("dashboard")
    assert not store.revoke_token("dashboard")
    assert store.verify_token(token) is None
    with pytest.raises(NotFound, match="token 'ci'"):
        store.revoke_token("ci")
    (info,) = store.list_tokens()
    assert info.name == "dashboard" and info.revoked_at is not None
    with ResultsStore(db_url) as other, other.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT name, token_sha256 FROM api_token").all()
    assert token not in str(stored)


def test_replaying_a_log_of_status_changes_is_harmless(store, trial_ids):
    trial = trial_ids[0]
    log = [("running", 1_700_000_000.0), ("completed", 1_700_000_600.0)]
    for status, at in log:
        store.set_trial_status(trial, status, at=at)
    events_before = store.events_since(0)

    replayed = [store.set_trial_status(trial, status, at=at) for status, at in log]

    assert replayed == [False, False]
    assert store.events_since(0) == events_before
    (row,) = store.query_trials(SWEEP, where={"id": trial},
                                fields=["status", "attempts", "started_at", "ended_at"]).rows
    assert (row["status"], row["attempts"]) == ("completed", 1)
    assert (row["ended_at"] - row["started_at"]).total_seconds() == 600


def test_repeating_running_records_where_the_trial_runs_without_a_new_attempt(store, trial_ids):
    first = trial_ids[0]
    assert store.set_trial_status(first, "running")
    assert not store.set_trial_status(first, "running", node="host:abc", device="cuda:0")
    row = store.query_trials(SWEEP, fields=["id", "attempts", "node", "device"], where={"id": first}).rows[0]
    assert (row["attempts"], row["node"], row["device"]) == (1, "host:abc", "cuda:0")
