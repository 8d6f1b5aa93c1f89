"""Hostile reads of /sweeps/{name}/trials: bounded metric filters and fields, one pass over the summaries, a
statement timeout, a full connection pool answered 503, and crafted cursors refused."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time

import httpx
import pytest
from apitesting import API, live_server, make_client
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy import event as sqlalchemy_event
from store_helpers import create_sweep

from api.app import create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore, upgrade_schema

STATS = ("last", "last_step", "min", "max", "best", "best_step")  # with a value once a trial has points
METRICS = [f"m{index}" for index in range(50)]
METRIC_FIELDS = [f"{metric}.{stat}" for metric in METRICS for stat in STATS]  # 300 known "<metric>.<stat>"
# 200 of them in a `fields` value within its 2,000 characters.
SHORT_FIELDS = [f"{metric}.{stat}" for metric in METRICS for stat in ("min", "max", "best", "last")]


def seed_metrics(store: ResultsStore, trials: int, metrics: list[str]) -> list[str]:
    """A sweep "pareto" of `trials` trials, each with two steps of every one of `metrics`."""
    trial_ids = create_sweep(store, trials=trials)
    store.write_results([
        (trial_id, step, {metric: index / trials + step + rank for rank, metric in enumerate(metrics)}, float(step))
        for index, trial_id in enumerate(trial_ids)
        for step in range(2)
    ])
    return trial_ids


def test_too_many_metric_filters_or_fields_are_refused_naming_the_limit(client, store):
    seed_metrics(store, 3, METRICS)
    many_filters = "&".join(f"{field}=-1e9..1e9" for field in METRIC_FIELDS[:200])
    refused = client.get(f"{API}/sweeps/pareto/trials?{many_filters}")
    assert refused.status_code == 422 and "at most 20 metric filters" in refused.json()["detail"]
    refused = client.get(f"{API}/sweeps/pareto/trials?fields=id,{','.join(SHORT_FIELDS)}")
    assert refused.status_code == 422 and "at most 50 metric fields" in refused.json()["detail"]
    at_limit = "&".join(f"{field}=-1e9..1e9" for field in METRIC_FIELDS[:20])
    page = client.get(f"{API}/sweeps/pareto/trials?{at_limit}&fields=id,{','.join(METRIC_FIELDS[:50])}")
    assert page.status_code == 200 and len(page.json()["rows"]) == 3


def test_limits_at_their_maximum_answer_on_a_2000_trial_postgres_sweep_with_one_pass_over_summaries(postgres_url):
    upgrade_schema(postgres_url)
    metrics = METRICS[:9]
    fields = [f"{metric}.{stat}" for metric in metrics for stat in STATS][:50]
    with ResultsStore(postgres_url) as store:
        seed_metrics(store, 2000, metrics)
        # Filters that keep trials whose index is below 1000 (m0.min = index / 2000 + 0) and let every other pass.
        filters = ["m0.min=..0.4999"] + [f"{field}=-1..100" for field in fields if field != "m0.min"][:19]
        statements: list[str] = []

        def record(_connection, _cursor, statement, *_args) -> None:
            statements.append(statement)

        sqlalchemy_event.listen(store.engine, "before_cursor_execute", record)
        with make_client(store) as client:
            query = "&".join(filters) + f"&fields=id,{','.join(fields)}&sort=-m1.best&limit=1000"
            answer = client.get(f"{API}/sweeps/pareto/trials?{query}")
            assert answer.status_code == 200, answer.text
            page = answer.json()
        sqlalchemy_event.remove(store.engine, "before_cursor_execute", record)
        summaries = store.summary_frame("pareto").set_index("id")
    assert len(page["rows"]) == 1000 and page["next_cursor"] is None
    best = [row["m1.best"] for row in page["rows"]]
    assert best == sorted(best, reverse=True) and all(row["m0.min"] < 0.5 for row in page["rows"])
    assert all(row[field] == summaries.at[row["id"], field] for row in page["rows"] for field in fields)
    (trial_query,) = [statement for statement in statements if "LIMIT" in statement]
    assert trial_query.count("FROM trial_summary") == 1 and trial_query.count("JOIN") == 1  # not one per metric


def test_eight_heavy_reads_at_once_leave_other_requests_answering(postgres_url):
    """Eight clients loop on reads at the limits (20 filters, 50 fields, sorted by a metric) against a real server;
    meanwhile light requests keep getting answers, and no request gets a 500 or hangs."""
    upgrade_schema(postgres_url)
    metrics = METRICS[:9]
    fields = [f"{metric}.{stat}" for metric in metrics for stat in STATS][:50]
    heavy_query = "&".join(f"{field}=-1..1e4" for field in fields[:20]) + f"&fields=id,{','.join(fields)}"
    heavy_query += "&sort=-m1.best&limit=1000"
    with ResultsStore(postgres_url) as store:
        seed_metrics(store, 1000, metrics)
        url = store.engine.url.render_as_string(hide_password=False)
        lock = threading.Lock()
        in_flight = [0]
        heavy_answers: list[httpx.Response] = []
        light_answers: list[tuple[httpx.Response, bool]] = []

        def heavy_client(base: str) -> None:
            with httpx.Client(timeout=60) as session:
                for _ in range(4):
                    with lock:
                        in_flight[0] += 1
                    answer = session.get(f"{base}/sweeps/pareto/trials?{heavy_query}")
                    with lock:
                        in_flight[0] -= 1
                        heavy_answers.append(answer)

        with live_server(create_app(store, ApiSettings(database_url=url))) as (base, _):
            clients = [threading.Thread(target=heavy_client, args=(base,)) for _ in range(8)]
            for thread in clients:
                thread.start()
            with httpx.Client(timeout=60) as session:
                while any(thread.is_alive() for thread in clients):
                    for path in ("/healthz", "/sweeps", "/sweeps/pareto/trials?limit=5"):
                        with lock:
                            busy_before = in_flight[0] > 0
                        answer = session.get(f"{base}{path}")
                        with lock:
                            light_answers.append((answer, busy_before and in_flight[0] > 0))
            for thread in clients:
                thread.join()

    def answered(response: httpx.Response) -> bool:
        return response.status_code == 200 or (response.status_code == 503 and "Retry-After" in response.headers)

    assert len(heavy_answers) == 32 and all(answered(response) for response in heavy_answers)
    assert sum(response.status_code == 200 for response in heavy_answers) >= 8
    assert [(r.status_code, r.text) for r, _ in light_answers if not answered(r)] == []
    assert any(response.status_code == 200 and during_load for response, during_load in light_answers)


def test_heavy_reads_beyond_their_slots_wait_then_get_503_while_light_reads_keep_their_connections(postgres_url):
    upgrade_schema(postgres_url)
    metrics = METRICS[:3]
    heavy = f"fields=id,{','.join(f'{metric}.{stat}' for metric in metrics for stat in STATS)}"  # 18 metric fields
    with ResultsStore(postgres_url) as store:
        seed_metrics(store, 3, metrics)
        url = store.engine.url.render_as_string(hide_password=False)
        # A statement timeout longer than the client's wait: without the slots the second heavy read would hang.
        settings = ApiSettings(database_url=url, heavy_reads=1, heavy_read_wait_s=0.5, read_timeout_s=120)
        blocker = create_engine(postgres_url)
        first: list[httpx.Response] = []
        try:
            with live_server(create_app(store, settings)) as (base, _), blocker.connect() as holder:
                holder.execute(text("LOCK TABLE trial_summary IN ACCESS EXCLUSIVE MODE"))
                stuck = threading.Thread(target=lambda: first.append(httpx.get(f"{base}/sweeps/pareto/trials?{heavy}",
                                                                               timeout=60)))
                stuck.start()
                deadline = time.monotonic() + 30
                while "trial_summary" not in waiting_queries(blocker) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert "trial_summary" in waiting_queries(blocker), "the first heavy read never reached the lock"
                second = httpx.get(f"{base}/sweeps/pareto/trials?{heavy}", timeout=20)
                light = httpx.get(f"{base}/sweeps/pareto/trials?limit=5", timeout=60)
                few_metrics = httpx.get(f"{base}/sweeps/pareto/trials?limit=5&sort=d_m", timeout=60)
                holder.rollback()
                stuck.join(timeout=60)
        finally:
            blocker.dispose()
    assert second.status_code == 503 and second.headers["Retry-After"]
    assert light.status_code == 200 and few_metrics.status_code == 200
    assert first[0].status_code == 200 and len(first[0].json()["rows"]) == 3


def waiting_queries(engine: Engine) -> str:
    """The text of the queries that sessions of this database are running while waiting on a lock (read in a
    transaction of its own: a transaction sees one snapshot of pg_stat_activity)."""
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ))
        return "\n".join(row.query for row in rows)


def test_a_read_past_the_statement_timeout_is_answered_503(postgres_url, caplog):
    upgrade_schema(postgres_url)
    with ResultsStore(postgres_url) as store:
        seed_metrics(store, 3, METRICS[:1])
    blocker = create_engine(postgres_url)
    settings = ApiSettings(database_url=postgres_url, read_timeout_s=0.5)
    try:
        with TestClient(create_app(settings=settings)) as client, blocker.connect() as holder:
            holder.execute(text("LOCK TABLE trial_summary IN ACCESS EXCLUSIVE MODE"))
            with caplog.at_level(logging.WARNING, logger="api.errors"):
                answer = client.get(f"{API}/sweeps/pareto/trials?fields=id,m0.best")
            holder.rollback()
            assert answer.status_code == 503 and answer.headers["Retry-After"]
            assert "statement timeout" in caplog.text  # the cause in the server's log, not in the answer
            assert client.get(f"{API}/sweeps/pareto/trials?fields=id,m0.best").status_code == 200
    finally:
        blocker.dispose()


def test_an_exhausted_connection_pool_is_answered_503_and_healthz_says_so(migrated_db_url):
    engine: Engine = create_engine(migrated_db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    with ResultsStore(engine) as store:
        create_sweep(store, trials=2)
        with make_client(store) as client:
            assert client.get(f"{API}/healthz").status_code == 200
            with engine.connect():
                answer = client.get(f"{API}/sweeps/pareto/trials")
                assert answer.status_code == 503 and answer.headers["Retry-After"]
                health = client.get(f"{API}/healthz")
                assert health.status_code == 503 and "connection" in health.json()["detail"]
                assert health.headers["Retry-After"]
            assert client.get(f"{API}/sweeps/pareto/trials").status_code == 200
            assert client.get(f"{API}/healthz").status_code == 200
    engine.dispose()


def encoded(cursor_json: str) -> str:
    return base64.urlsafe_b64encode(cursor_json.encode()).decode()


@pytest.mark.parametrize("cursor_json", [
    '["id","0",5]',
    '["id",{"x":1},"0"]',
    '["budget",[1,2],"0"]',
    '["budget","abc","0"]',
    '["id",1.5,"0"]',
    '["created_at","yesterday","0"]',
    '["id","0",["a"]]',  # trial id not a string
    '["id","0",null]',
    '["d_m",[[1,[2]]],"0"]',  # nested lists
    '["budget",' + str(10**30) + ',"0"]',  # beyond BIGINT
    '["d_m",' + str(2**40) + ',"0"]',  # beyond INTEGER
    '["d_m",true,"0"]',
    '["rho_rec","0.5","0"]',
    '["status","bogus","0"]',
    '["bpc.best","x","0"]',
    '["bpc.best",NaN,"0"]',
    '["bpc.best_step",1.5,"0"]',
    '["created_at",{"datetime":5},"0"]',
    '["created_at",{"datetime":"not a time"},"0"]',
    '["created_at",{"datetime":"2026-01-01T00:00:00","x":1},"0"]',
    '{"sort":"id","value":"0","id":"0"}',
    '["id","0"]',
])
def test_crafted_cursors_are_refused_with_422(client, store, cursor_json):
    create_sweep(store, trials=3)
    sort = json.loads(cursor_json)[0] if cursor_json.startswith("[") else "id"
    answer = client.get(f"{API}/sweeps/pareto/trials", params={"sort": sort, "cursor": encoded(cursor_json)})
    assert answer.status_code == 422, answer.text
    assert "cursor" in answer.json()["detail"]


def test_well_formed_cursors_still_page_on_every_kind_of_sort_field(client, store):
    seed_metrics(store, 5, ["bpc"])
    for sort in ("id", "-budget", "rho_rec", "status", "created_at", "-bpc.best", "bpc.best_step"):
        seen, cursor = [], None
        for _ in range(10):
            params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"{API}/sweeps/pareto/trials", params=params).json()
            seen += [row["id"] for row in page["rows"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 5, sort
