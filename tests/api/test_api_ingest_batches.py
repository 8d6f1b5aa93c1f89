"""POST /sweeps/{name}/results in batches: all or nothing, one event naming the token, orchestrated trials guarded."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx
import pytest
from apitesting import API
from deploy.processes import free_port, serve_command, stop_group, wait_healthy
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from store_helpers import add_finished, allocation, create_sweep

from resultsdb import ResultsStore, migrate
from resultsdb.writes import EVENT_APPEND_LOCK

CREATE = "task=shd_adding&metric=accuracy&mode=max"
ROWS = 10_000
KILL_DEADLINE_S = 120


def row(index: int, accuracy: float = 0.5, **fields) -> dict:
    """The index-th of 10,000 distinct rows (the id depends on n_hidden and seed)."""
    return {"budget": 100_000, "n_hidden": 1 + index // 4, "d_m": 5, "d_mlp": 10, "l_mlp": 1, "d_tree": 30,
            "d_branch": 10, "rho_rec": 0.25, "k_e": 200, "k_c": 300, "params_total": 99_000, "seed": index % 4,
            "metrics": {"accuracy": accuracy}, **fields}


def many_rows(count: int = ROWS) -> list[dict]:
    return [row(index) for index in range(count)]


def orchestrated_trial(store: ResultsStore) -> tuple[str, dict]:
    """A sweep as `orchestrator submit` leaves it (a spec of its own) with one trial completed at accuracy 0.61, and
    a row that would change that trial."""
    create_sweep(store, "orchestrated", metric="accuracy", mode="max")
    trial = allocation(params_total=99_000, budget=100_000)
    (trial_id,) = add_finished(store, "orchestrated", [(trial, 0.61)], metric="accuracy")
    return trial_id, {**trial, "metrics": {"accuracy": 0.99}}


def final_accuracy(store: ResultsStore, trial_id: str) -> float | None:
    return store.find_trial(trial_id).metrics["accuracy"].final


def test_ten_thousand_rows_are_stored_with_one_event_naming_the_token(client, store, auth):
    client.post(f"{API}/sweeps/published/results?{CREATE}", json={"rows": [row(ROWS)]}, headers=auth)
    before = store.last_event_id()
    answer = client.post(f"{API}/sweeps/published/results", json={"rows": many_rows()}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert store.get_sweep("published").trial_counts == {"completed": ROWS + 1}
    events = store.events_since(before)
    assert [(event.kind, event.payload) for event in events] == [
        ("trials_ingested", {"token": "tester", "trials": ROWS, "added": ROWS, "overwritten": []})
    ]


def test_a_request_whose_last_row_overwrites_an_orchestrated_trial_stores_none_of_its_rows(client, store, auth):
    trial_id, overwriting = orchestrated_trial(store)
    before = store.last_event_id()
    answer = client.post(f"{API}/sweeps/orchestrated/results", json={"rows": [*many_rows(ROWS - 1), overwriting]},
                         headers=auth)
    assert answer.status_code == 409, answer.text
    assert store.get_sweep("orchestrated").trial_counts == {"completed": 1}
    assert final_accuracy(store, trial_id) == 0.61 and store.events_since(before) == []


def test_a_request_whose_last_row_repeats_its_first_stores_none_of_its_rows(client, store, auth):
    answer = client.post(f"{API}/sweeps/published/results?{CREATE}", json={"rows": [*many_rows(ROWS - 1), row(0, 0.7)]},
                         headers=auth)
    assert answer.status_code == 422, answer.text
    assert f"0 and {ROWS - 1}" in answer.json()["detail"]
    assert store.get_sweep("published") is None and store.last_event_id() == 0


def test_overwriting_an_orchestrated_trial_is_refused_without_the_flag(client, store, auth):
    trial_id, overwriting = orchestrated_trial(store)
    before = store.last_event_id()
    answer = client.post(f"{API}/sweeps/orchestrated/results", json={"rows": [overwriting]}, headers=auth)
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert trial_id in detail and "overwrite=true" in detail and "\n" not in detail
    assert final_accuracy(store, trial_id) == 0.61 and store.events_since(before) == []


def test_resending_an_orchestrated_trial_unchanged_needs_no_flag(client, store, auth):
    trial_id, overwriting = orchestrated_trial(store)
    unchanged = {**overwriting, "metrics": {"accuracy": 0.61}}
    answer = client.post(f"{API}/sweeps/orchestrated/results", json={"rows": [unchanged]}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["overwritten"] == [] and final_accuracy(store, trial_id) == 0.61


def test_an_allowed_overwrite_is_recorded_with_the_token_and_the_trials(client, store, auth):
    trial_id, overwriting = orchestrated_trial(store)
    before = store.last_event_id()
    answer = client.post(f"{API}/sweeps/orchestrated/results?overwrite=true", json={"rows": [overwriting, row(0)]},
                         headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["overwritten"] == [trial_id] and final_accuracy(store, trial_id) == 0.99
    (event,) = [event for event in store.events_since(before) if event.kind == "trials_ingested"]
    assert event.payload == {"token": "tester", "trials": 2, "added": 1, "overwritten": [trial_id]}


CSV_HEADER = "budget,n_hidden,d_m,d_mlp,l_mlp,d_tree,d_branch,rho_rec,k_e,k_c,params_total,seed,accuracy,loss\n"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (CSV_HEADER + "100000,1_000,5,10,1,30,10,0.25,200,300,99000,0,0.91,0.3\n", "rows.0.n_hidden"),
        (CSV_HEADER + "100000,96,5,10,1,30,10,0.25,200,300,99000,0,0.91,0.3\n"
                      "100000,96,5,10,1,30,10,0.25,200,300,99000,0,0.9_1,0.3\n", "rows.1.accuracy"),
        (CSV_HEADER + "100000,96,5,10,1,30,10,0.25,200,300,99000,0,,\n", "rows.0.metrics"),
        (CSV_HEADER + "100000,96,5,10,1,30,10,0.25,200,300,99000,0,0.91,0.3\n"
                      "100000,64,5,10,1,30,10,0.25,200,300,99000,0,0.91,0.3\n"
                      "100000,96,5,10,1,30,10,0.25,200,300,99000,0,0.92,0.3\n", "0 and 2"),
    ],
    ids=["underscore-in-integer", "underscore-in-metric", "all-metrics-empty", "duplicate-rows"],
)
def test_csv_rows_that_would_be_misread_are_refused_naming_the_row(client, store, auth, body, named):
    answer = client.post(f"{API}/sweeps/csv/results?{CREATE}", content=body,
                         headers={**auth, "Content-Type": "text/csv"})
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"]
    assert store.get_sweep("csv") is None


def test_a_json_row_whose_metrics_are_all_null_is_refused(client, store, auth):
    body = {"rows": [row(0, metrics={"accuracy": None, "loss": None})]}
    answer = client.post(f"{API}/sweeps/published/results?{CREATE}", json=body, headers=auth)
    assert answer.status_code == 422 and "rows.0.metrics" in answer.json()["detail"]


def _waits_for_the_event_lock(connection, database: str) -> bool:
    waiting = connection.execute(
        text("SELECT count(*) FROM pg_stat_activity WHERE datname = :database AND wait_event_type = 'Lock' "
             "AND wait_event = 'advisory'"),
        {"database": database},
    ).scalar()
    return bool(waiting)


def test_a_killed_ingest_leaves_nothing_half_done(postgres_url, tmp_path):
    """kill -9 of a real server whose ingest has written every row but not committed: none of them is stored.

    The test holds the lock that appending events takes (the last step before the commit), so the server's
    transaction waits there until the server is killed."""
    migrate.upgrade(postgres_url)
    with ResultsStore(postgres_url) as store:
        auth = {"Authorization": f"Bearer {store.create_token('killed')}"}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen([*serve_command(postgres_url), "--port", str(port)], stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
    engine = create_engine(postgres_url, poolclass=NullPool)
    try:
        wait_healthy(base_url, server, log)
        first = httpx.post(f"{base_url}{API}/sweeps/published/results?{CREATE}", json={"rows": [row(ROWS)]},
                           headers=auth, timeout=60)
        assert first.status_code == 200, first.text
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": EVENT_APPEND_LOCK})
            request = threading.Thread(target=_post_ignoring_the_kill, args=(base_url, auth), daemon=True)
            request.start()
            deadline = time.monotonic() + KILL_DEADLINE_S
            while not _waits_for_the_event_lock(watcher, engine.url.database):
                assert time.monotonic() < deadline, f"the ingest never reached its commit:\n{log.read_text()[-2000:]}"
                time.sleep(0.05)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": EVENT_APPEND_LOCK})
            request.join(30)
    finally:
        stop_group(server)
        engine.dispose()
    with ResultsStore(postgres_url) as store:
        assert store.get_sweep("published").trial_counts == {"completed": 1}
        assert [event.kind for event in store.events_since()].count("trials_ingested") == 1


def _post_ignoring_the_kill(base_url: str, auth: dict[str, str]) -> None:
    try:
        httpx.post(f"{base_url}{API}/sweeps/published/results", json={"rows": many_rows()}, headers=auth,
                   timeout=KILL_DEADLINE_S)
    except httpx.TransportError:  # the server is killed mid-request
        pass
