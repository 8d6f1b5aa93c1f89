"""Ingest benchmark on Postgres: batched idempotent writer vs naive one-row-per-transaction ORM.

Writes TRIALS x STEPS x 3 metrics (3 M series rows by default) through ResultsStore.write_results
in flushes of --batch-trials trials x --batch-steps steps (as the orchestrator's writer flushes
running trials), then a sample through a naive ORM path (one session.add + commit per row) into
the same database, and prints both rates and their ratio. Then, after VACUUM ANALYZE (what
autovacuum does to a live database), times the query "best summary value per trial" of the whole
sweep through ResultsStore.query_trials (p50 over repeats). Last, times one POST of --api-rows trials
to the API's ingest endpoint (POST /sweeps/{name}/results, in-process app, one transaction).

Targets: >= 50,000 rows/s, >= 20x the naive path, best-per-trial query p50 <= 50 ms, API ingest of
10,000 rows <= 5 s.

    python benchmarks/ingest.py                    # full size, server from ELMSCALE_TEST_POSTGRES_URL
    python benchmarks/ingest.py --trials 1000      # quicker

A fresh database is created on the server and dropped afterwards (keep it with --keep).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import uuid

from fastapi.testclient import TestClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from api.app import API_PREFIX, create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore, migrate
from resultsdb.models import MetricPoint

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
METRICS = {"bpc": "min", "loss": "min", "accuracy": "max"}
TARGET_ROWS_PER_S = 50_000
TARGET_RATIO = 20
TARGET_QUERY_MS = 50
TARGET_API_INGEST_S = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("ELMSCALE_TEST_POSTGRES_URL", DEFAULT_SERVER_URL))
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-trials", type=int, default=100)
    parser.add_argument("--batch-steps", type=int, default=10)
    parser.add_argument("--naive-rows", type=int, default=2_000)
    parser.add_argument("--query-repeats", type=int, default=30)
    parser.add_argument("--api-rows", type=int, default=10_000, help="rows of the one API ingest request")
    parser.add_argument("--api-row-sample", type=int, default=300, help="rows posted one per request (baseline)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    return parser.parse_args()


def allocation(index: int) -> dict:
    d_m = 5 + index % 20
    return {
        "budget": 100_000 * (1 + index % 10),
        "n_hidden": 64 + index % 512,
        "d_m": d_m,
        "d_mlp": 2 * d_m,
        "l_mlp": 1,
        "d_tree": 10,
        "d_branch": 10,
        "rho_rec": 0.1 * (index % 10),
        "k_e": 100 + index,
        "k_c": 100,
        "params_total": 99_000 + index,
        "config": {"index": index, "d_m": d_m},
        "seed": index % 3,
    }


def metric_values(trial_index: int, step: int) -> dict[str, float]:
    loss = 3.0 / math.sqrt(1 + step) + 0.001 * (trial_index % 97)
    return {"bpc": loss / math.log(2), "loss": loss, "accuracy": 1.0 - loss / 4}


def batched_ingest(store: ResultsStore, trial_ids: list[str], args: argparse.Namespace, progress: Progress) -> float:
    """Rows per second through write_results."""
    total_rows = len(trial_ids) * args.steps * len(METRICS)
    task = progress.add_task("batched writer", total=total_rows)
    started = time.perf_counter()
    for wave in range(0, len(trial_ids), args.batch_trials):
        wave_ids = list(enumerate(trial_ids[wave : wave + args.batch_trials], start=wave))
        for first_step in range(0, args.steps, args.batch_steps):
            steps = range(first_step, min(first_step + args.batch_steps, args.steps))
            batch = [
                (trial_id, step, metric_values(index, step), 1.7e9 + step)
                for index, trial_id in wave_ids
                for step in steps
            ]
            store.write_results(batch)
            progress.advance(task, len(batch) * len(METRICS))
    return total_rows / (time.perf_counter() - started)


def naive_ingest(url: str, trial_ids: list[str], rows: int, progress: Progress) -> float:
    """Rows per second through one ORM session.add + commit per row."""
    task = progress.add_task("naive ORM, 1 row/tx", total=rows)
    engine = create_engine(url)
    started = time.perf_counter()
    for index in range(rows):
        trial_id, step = trial_ids[index % len(trial_ids)], index // len(trial_ids)
        with Session(engine) as session:
            session.add(MetricPoint(trial_id=trial_id, metric="naive", step=step, value=1.0, wall_time=1.7e9))
            session.commit()
        progress.advance(task)
    rate = rows / (time.perf_counter() - started)
    engine.dispose()
    return rate


def best_query_p50_ms(store: ResultsStore, sweep: str, repeats: int, expected_rows: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        page = store.query_trials(sweep, fields=["id", "bpc.best"], limit=None)
        timings.append((time.perf_counter() - started) * 1000)
        assert len(page.rows) == expected_rows and page.rows[0]["bpc.best"] is not None
    return statistics.median(timings)


def api_ingest_s(store: ResultsStore, url: str, rows: int, sample: int) -> tuple[float, float]:
    """Seconds for one POST of `rows` trials (metrics bpc and loss) to the ingest endpoint, into a new sweep; and
    the seconds `rows` would take at one POST (one transaction) per row, from `sample` such POSTs into another."""
    def body(indices: range) -> dict:
        return {"rows": [{**allocation(index), "metrics": {"bpc": 1.5, "loss": 1.0}} for index in indices]}

    headers = {"Authorization": f"Bearer {store.create_token('ingest-benchmark')}"}
    query = "task=benchmark&metric=bpc&mode=min"
    with TestClient(create_app(store, ApiSettings(database_url=url))) as client:
        started = time.perf_counter()
        answer = client.post(f"{API_PREFIX}/sweeps/api-ingest/results?{query}", json=body(range(rows)), headers=headers)
        batched = time.perf_counter() - started
        assert answer.status_code == 200, answer.text
        started = time.perf_counter()
        for index in range(sample):
            answer = client.post(f"{API_PREFIX}/sweeps/api-ingest-per-row/results?{query}",
                                 json=body(range(index, index + 1)), headers=headers)
            assert answer.status_code == 200, answer.text
        per_row = (time.perf_counter() - started) / sample * rows
    return batched, per_row


def main() -> None:
    args = parse_args()
    console = Console()
    server = make_url(args.server_url)
    database = f"elmscale_bench_{uuid.uuid4().hex[:8]}"
    url = server.set(database=database).render_as_string(hide_password=False)
    maintenance = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with maintenance.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        migrate.upgrade(url)
        with ResultsStore(url) as store:
            sweep = "ingest-benchmark"
            store.create_sweep(
                sweep, task="benchmark", metric="bpc", mode="min", spec_text="benchmark", metric_modes=METRICS
            )
            trial_ids = store.add_trials(sweep, [allocation(index) for index in range(args.trials)])
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=console) as progress:
                batched_rate = batched_ingest(store, trial_ids, args, progress)
                naive_rate = naive_ingest(url, trial_ids, args.naive_rows, progress)
            # A live database gets this from autovacuum; without it the planner still believes the
            # tables are empty and the summaries carry the dead row versions of the ingest.
            with create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect() as connection:
                connection.execute(text("VACUUM ANALYZE"))
            query_ms = best_query_p50_ms(store, sweep, args.query_repeats, len(trial_ids))
            ingest_s, per_row_s = api_ingest_s(store, url, args.api_rows, args.api_row_sample)

        table = Table(title=f"ingest on {server.drivername} ({args.trials} trials x {args.steps} steps x 3 metrics)")
        for column in ("figure", "measured", "target", "met"):
            table.add_column(column)
        ratio = batched_rate / naive_rate
        table.add_row("batched writer, rows/s", f"{batched_rate:,.0f}", f">= {TARGET_ROWS_PER_S:,}",
                      _met(batched_rate >= TARGET_ROWS_PER_S))
        table.add_row(f"naive ORM ({args.naive_rows} rows), rows/s", f"{naive_rate:,.0f}", "", "")
        table.add_row("ratio batched / naive", f"{ratio:.1f}x", f">= {TARGET_RATIO}x", _met(ratio >= TARGET_RATIO))
        table.add_row(
            f"best bpc per trial, {len(trial_ids)} trials, p50 of {args.query_repeats} (after VACUUM ANALYZE)",
            f"{query_ms:.1f} ms",
            f"<= {TARGET_QUERY_MS} ms",
            _met(query_ms <= TARGET_QUERY_MS),
        )
        table.add_row(f"API ingest, {args.api_rows:,} rows in one POST", f"{ingest_s:.2f} s",
                      f"<= {TARGET_API_INGEST_S} s (10,000 rows)", _met(ingest_s <= TARGET_API_INGEST_S))
        table.add_row(f"API ingest, {args.api_rows:,} rows at one POST per row (from {args.api_row_sample})",
                      f"{per_row_s:.1f} s ({per_row_s / ingest_s:.0f}x the one POST)", "", "")
        console.print(table)
    finally:
        if not args.keep:
            with maintenance.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        maintenance.dispose()


def _met(met: bool) -> str:
    return "yes" if met else "[red]no[/red]"


if __name__ == "__main__":
    main()
