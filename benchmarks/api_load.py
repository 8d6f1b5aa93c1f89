"""API load benchmark on Postgres: frontier/optimum latency over HTTP and export throughput, vs the naive path.

Seeds a fresh database (created on the server, dropped afterwards unless --keep) through ResultsStore with
--trials trials (10,000) x --steps points (100): 1 M series rows. Starts uvicorn on 127.0.0.1 in a subprocess
(`api.app:create_app`, factory), then over HTTP:

* frontier and optimum: the first (cold) request, then p50/p99 over --requests requests each;
* export: rows/s for csv, parquet and arrow (median of 5 downloads);
* the naive path in the same run: read every series row and trial into pandas, take each trial's best value,
  and compute the frontier; printed with the ratio to the API's p50;
* query cost: a page filtered on 20, 100 and 200 `<metric>.<stat>` fields and a 200-field projection, through
  the store's one pass over the summaries and, in the same run, through the join per filter that the store used
  before (the cost that let a 2.7 KB URL occupy the database for 88 s); over HTTP, a request at the limits
  (20 filters, 50 fields) and the refusal of 200 filters;
* eight such requests at once: the latency of light requests (healthz, a page of 5) while eight clients loop on
  requests at the limits, against the same requests on the idle server.

Targets: frontier p50 <= 50 ms, export >= 100,000 rows/s, 200 filters answered or refused within 2 s, light
requests p99 under load <= 1 s.

    python benchmarks/api_load.py                     # full size, server from ELMSCALE_TEST_POSTGRES_URL
    python benchmarks/api_load.py --trials 1000       # quicker
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import aliased
from sqlalchemy.pool import NullPool

from analysis import pareto_frontier
from resultsdb import SUMMARY_STATS, Range, ResultsStore, migrate
from resultsdb.models import Sweep, Trial, TrialSummary

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SWEEP = "bench"
TARGET_FRONTIER_P50_MS = 50.0
TARGET_EXPORT_ROWS_PER_S = 100_000
TARGET_FILTERED_S = 2.0
TARGET_LIGHT_P99_MS = 1000.0
API_MAX_FILTERS, API_MAX_FIELDS = 20, 50  # api/filters.py
STATS = ("last", "min", "max", "best", "best_step", "last_step")
SERVER_START_TIMEOUT_S = 60.0
WRITE_BATCH_TRIALS = 200
console = Console()


def maintenance_engine(server_url: str):
    url = make_url(server_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def seed(store: ResultsStore, trials: int, steps: int, extra_metrics: list[str]) -> None:
    """A sweep of `trials` trials over 10 budgets x 20 values of d_m x seeds, each with `steps` bpc points and,
    at its last step, one point of each of `extra_metrics`."""
    store.create_sweep(SWEEP, task="enwik8", metric="bpc", mode="min", spec_text=f"benchmark {trials}x{steps}",
                       metric_modes={metric: "min" for metric in extra_metrics})
    rng = np.random.default_rng(0)
    planned = []
    for index in range(trials):
        budget, d_m, seed_ = 100_000 * (1 + index % 10), 5 + (index // 10) % 20, index // 200
        params_total = budget - 37 * d_m - seed_
        planned.append({
            "config": {"index": index}, "seed": seed_, "budget": budget, "n_hidden": params_total // (50 * d_m),
            "d_m": d_m, "d_mlp": 2 * d_m, "l_mlp": 1, "d_tree": 10, "d_branch": 5, "rho_rec": 0.5,
            "k_e": 40 * d_m, "k_c": 50, "params_total": params_total,
        })
    trial_ids = store.add_trials(SWEEP, planned)
    # A loss curve per trial whose floor depends on budget and on d_m (interior optimum near d_m = 15).
    floors = [3.0 - 0.1 * np.log(t["budget"] / 1e5) + 0.002 * (t["d_m"] - 15) ** 2 for t in planned]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("seeding series", total=trials * steps)
        for start in range(0, trials, WRITE_BATCH_TRIALS):
            batch = [
                (trial_id, step, {"bpc": floor + 2.0 / (1 + step) + 0.01 * rng.standard_normal()}, float(step))
                for trial_id, floor in zip(trial_ids[start : start + WRITE_BATCH_TRIALS], floors[start:])
                for step in range(steps)
            ]
            for index, (_, _, values, _) in enumerate(batch[steps - 1 :: steps]):
                values.update({metric: (start + index) / trials + rank for rank, metric in enumerate(extra_metrics)})
            store.write_results(batch)
            progress.advance(task, len(batch))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(database_url: str, port: int) -> subprocess.Popen:
    environment = {**os.environ, "ELMSCALE_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, env=environment, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"uvicorn exited with status {server.returncode}")
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"uvicorn did not answer within {SERVER_START_TIMEOUT_S:.0f} s")


def latencies_ms(client: httpx.Client, path: str, requests: int) -> tuple[float, list[float]]:
    """(first request, the following `requests`) in milliseconds."""
    timings = []
    for _ in range(requests + 1):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        timings.append(1000 * (time.perf_counter() - started))
    return timings[0], timings[1:]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def metric_fields(metrics: list[str], count: int) -> list[str]:
    """`count` distinct "<metric>.<stat>" fields, bpc's first."""
    fields = [f"{metric}.{stat}" for metric in ["bpc", *metrics] for stat in STATS]
    if count > len(fields):
        raise SystemExit(f"--metrics too small for {count} fields: raise it to {count // len(STATS)}")
    return fields[:count]


def filters_of(fields: list[str]) -> dict[str, Range]:
    """A filter per field that every trial passes: the database still evaluates each one."""
    return {field: Range(-1e9, 1e9) for field in fields}


def join_per_field_page(store: ResultsStore, where: dict[str, Range], fields: list[str], limit: int = 100) -> int:
    """The page as the store compiled it before: one outer join on trial_summary per distinct metric field."""
    summaries = {}
    for field in dict.fromkeys([*fields, *where]):
        if field == "id":
            continue
        metric, _, stat = field.rpartition(".")
        summaries[field] = (aliased(TrialSummary), metric, SUMMARY_STATS[stat])
    statement = select(Trial.id, *(getattr(alias, column) for alias, _, column in summaries.values()))
    statement = statement.join(Sweep, Sweep.id == Trial.sweep_id).where(Sweep.name == SWEEP)
    for alias, metric, _ in summaries.values():
        statement = statement.outerjoin(alias, (alias.trial_id == Trial.id) & (alias.metric == metric))
    for field, wanted in where.items():
        alias, _, column = summaries[field]
        statement = statement.where(getattr(alias, column).between(wanted.low, wanted.high))
    with store.engine.connect() as connection:
        return len(connection.execute(statement.order_by(Trial.id).limit(limit + 1)).all())


def seconds(call, repeats: int) -> float:
    """Median wall seconds of `repeats` calls."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def query_cost(store: ResultsStore, metrics: list[str], repeats: int) -> list[tuple[str, float, float]]:
    """(case, one pass s, join per field s) for 20/100/200 filters and a 200-field projection."""
    cases = [(f"{count} filters", filters_of(metric_fields(metrics, count)), ["id"]) for count in (20, 100, 200)]
    cases.append(("200 fields", {}, ["id", *metric_fields(metrics, 200)]))
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("query cost", total=len(cases))
        for label, where, fields in cases:
            one_pass = seconds(partial(store.query_trials, SWEEP, where=where, fields=fields), repeats)
            # One run: the join per field is what the benchmark exists to show is slow.
            joined = seconds(partial(join_per_field_page, store, where, fields), 1)
            rows.append((label, one_pass, joined))
            progress.advance(task)
    return rows


def limit_query(metrics: list[str]) -> str:
    """A query string at the API's limits: 20 filters, 50 metric fields, sorted by a metric."""
    fields = metric_fields(metrics, API_MAX_FIELDS)
    filters = "&".join(f"{field}=-1e9..1e9" for field in fields[:API_MAX_FILTERS])
    return f"{filters}&fields=id,{','.join(fields)}&sort=-bpc.best"


def light_latencies_ms(api: str, requests: int, heavy_query: str | None) -> tuple[list[float], int, Counter]:
    """Light requests' latencies (ms), while eight clients loop on `heavy_query` when given; with the number of
    heavy requests answered and the answers that were not 200, by (request, status)."""
    stop = threading.Event()
    heavy_done = [0]
    not_ok: Counter = Counter()
    lock = threading.Lock()

    def heavy_client() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                status = client.get(f"{api}/sweeps/{SWEEP}/trials?{heavy_query}").status_code
                with lock:
                    heavy_done[0] += 1
                    not_ok[("at the limits", status)] += status != 200

    clients = [threading.Thread(target=heavy_client) for _ in range(8 if heavy_query else 0)]
    for thread in clients:
        thread.start()
    timings = []
    try:
        time.sleep(1.0 if clients else 0.0)  # let every heavy client have a request in flight
        with httpx.Client(timeout=120) as client:
            for index in range(requests):
                path = "/healthz" if index % 2 else f"/sweeps/{SWEEP}/trials?limit=5"
                started = time.perf_counter()
                status = client.get(f"{api}{path}").status_code
                timings.append(1000 * (time.perf_counter() - started))
                with lock:
                    not_ok[(path.split("?")[0], status)] += status != 200
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    return timings, heavy_done[0], +not_ok


def naive_frontier(store: ResultsStore) -> pd.DataFrame:
    """The path without summaries: every series row into pandas, best per trial, then the frontier."""
    series = pd.read_sql_table("metric_series", store.engine, columns=["trial_id", "metric", "value"])
    trials = pd.read_sql_table("trial", store.engine).drop(columns=["config"])
    best = series[series["metric"] == "bpc"].groupby("trial_id")["value"].min().rename("metric")
    return pareto_frontier(trials.join(best, on="id"), "params_total", "metric", "min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=100, help="series points per trial")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--metrics", type=int, default=34, help="metrics per trial (bpc and m0, m1, ...)")
    parser.add_argument("--query-repeats", type=int, default=5, help="repeats of each one-pass query-cost case")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()

    server_url = os.environ.get("ELMSCALE_TEST_POSTGRES_URL") or DEFAULT_SERVER_URL
    name = f"elmscale_api_bench_{uuid.uuid4().hex[:8]}"
    database_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with maintenance_engine(server_url).connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    server = None
    try:
        migrate.upgrade(database_url)
        with ResultsStore(database_url) as store:
            started = time.perf_counter()
            extra_metrics = [f"m{index}" for index in range(args.metrics - 1)]
            seed(store, args.trials, args.steps, extra_metrics)
            console.print(f"seeded {args.trials:,} trials, {args.trials * args.steps:,} series rows "
                          f"in {time.perf_counter() - started:.0f} s")
            with maintenance_engine(database_url).connect() as connection:
                connection.execute(text("VACUUM ANALYZE"))
            naive_ms = []
            for _ in range(3):
                started = time.perf_counter()
                naive_points = naive_frontier(store)
                naive_ms.append(1000 * (time.perf_counter() - started))
            costs = query_cost(store, extra_metrics, args.query_repeats)

        port = free_port()
        server = start_server(database_url, port)
        api = f"http://127.0.0.1:{port}/api/v1"
        base = f"{api}/sweeps/{SWEEP}"
        with httpx.Client(timeout=120) as client:
            frontier_cold, frontier = latencies_ms(client, f"{base}/frontier?aggregate_seeds=false", args.requests)
            api_points = client.get(f"{base}/frontier?aggregate_seeds=false").json()["points"]
            optimum_cold, optimum = latencies_ms(client, f"{base}/optimum", args.requests)
            export_rates = {}
            for file_format in ("csv", "parquet", "arrow"):
                timings = []
                for _ in range(5):
                    started = time.perf_counter()
                    size = len(client.get(f"{base}/export?format={file_format}").raise_for_status().content)
                    timings.append(time.perf_counter() - started)
                export_rates[file_format] = (args.trials / statistics.median(timings), size)
            at_limits_url = f"{base}/trials?{limit_query(extra_metrics)}"
            assert client.get(at_limits_url).status_code == 200
            at_limits_s = seconds(partial(client.get, at_limits_url), args.query_repeats)
            too_many = "&".join(f"{field}=-1e9..1e9" for field in metric_fields(extra_metrics, 200))
            started = time.perf_counter()
            refusal = client.get(f"{base}/trials?{too_many}")
            refused_ms = 1000 * (time.perf_counter() - started)
            assert refusal.status_code == 422, refusal.text
        quiet, _, _ = light_latencies_ms(api, args.requests, None)
        loaded, heavy_answered, not_ok = light_latencies_ms(api, args.requests, limit_query(extra_metrics))

        same = sorted(point["id"] for point in api_points) == sorted(naive_points["id"])
        table = Table(title=f"API over HTTP: {args.trials:,} trials, {args.trials * args.steps:,} series rows "
                            "(Postgres)")
        for column in ("measure", "first request", "p50", "p99", "target"):
            table.add_column(column, justify="right")
        table.add_row("frontier [ms]", f"{frontier_cold:.1f}", f"{percentile(frontier, 50):.1f}",
                      f"{percentile(frontier, 99):.1f}", f"<= {TARGET_FRONTIER_P50_MS:.0f}")
        table.add_row("optimum [ms]", f"{optimum_cold:.1f}", f"{percentile(optimum, 50):.1f}",
                      f"{percentile(optimum, 99):.1f}", "")
        table.add_row("naive frontier [ms]", f"{naive_ms[0]:.0f}", f"{statistics.median(naive_ms):.0f}", "", "")
        for file_format, (rate, size) in export_rates.items():
            table.add_row(f"export {file_format} [rows/s]", f"{size / 2**20:.1f} MiB", f"{rate:,.0f}", "",
                          f">= {TARGET_EXPORT_ROWS_PER_S:,}")
        console.print(table)
        console.print(f"frontier: naive path / API p50 = {statistics.median(naive_ms) / percentile(frontier, 50):.0f}x "
                      f"(first request: {statistics.median(naive_ms) / frontier_cold:.1f}x); "
                      f"same frontier trials: {same}")
        cost = Table(title=f"query cost: a page of /sweeps/{SWEEP}/trials, {args.trials:,} trials x "
                           f"{args.metrics} metrics")
        for column in ("query", "one pass [s]", "join per field, before [s]", "ratio"):
            cost.add_column(column, justify="right")
        for label, one_pass, joined in costs:
            cost.add_row(label, f"{one_pass:.3f}", f"{joined:.3f}", f"{joined / one_pass:.0f}x")
        cost.add_row(f"HTTP, at the limits ({API_MAX_FILTERS} filters, {API_MAX_FIELDS} fields), median",
                     f"{at_limits_s:.3f}", "", "")
        cost.add_row("HTTP, 200 filters: refused 422", f"{refused_ms / 1000:.3f}", "", "")
        console.print(cost)
        refusals = ", ".join(f"{count} x {status} {path}" for (path, status), count in not_ok.items())
        console.print(f"light requests (healthz, a page of 5): idle p50 {percentile(quiet, 50):.1f} ms, "
                      f"p99 {percentile(quiet, 99):.1f} ms; with 8 clients looping at the limits p50 "
                      f"{percentile(loaded, 50):.1f} ms, p99 {percentile(loaded, 99):.1f} ms "
                      f"({heavy_answered} heavy requests answered meanwhile); answers not 200: {refusals or 'none'}")
        filtered_ok = max(one_pass for label, one_pass, _ in costs) <= TARGET_FILTERED_S
        filtered_ok = filtered_ok and refused_ms / 1000 <= TARGET_FILTERED_S
        light_ok = percentile(loaded, 99) <= TARGET_LIGHT_P99_MS and not not_ok
        frontier_ok = percentile(frontier, 50) <= TARGET_FRONTIER_P50_MS
        export_ok = min(rate for rate, _ in export_rates.values()) >= TARGET_EXPORT_ROWS_PER_S
        console.print(f"targets: frontier p50 {'met' if frontier_ok else 'MISSED'}, "
                      f"export {'met' if export_ok else 'MISSED'}, "
                      f"200 filters {'met' if filtered_ok else 'MISSED'}, "
                      f"light requests under load {'met' if light_ok else 'MISSED'}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep:
            with maintenance_engine(server_url).connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
