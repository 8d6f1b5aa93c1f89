"""API load benchmark on Postgres: frontier/optimum latency over HTTP and export throughput, vs the naive path.

Seeds a fresh database (created on the server, dropped afterwards unless --keep) through ResultsStore with
--trials trials (10,000) x --steps points (100): 1 M series rows. Starts uvicorn on 127.0.0.1 in a subprocess
(`api.app:create_app`, factory), then over HTTP:

* frontier and optimum: the first (cold) request, then p50/p99 over --requests requests each;
* export: rows/s for csv, parquet and arrow (median of 5 downloads);
* the naive path in the same run: read every series row and trial into pandas, take each trial's best value,
  and compute the frontier; printed with the ratio to the API's p50.

Targets: frontier p50 <= 50 ms, export >= 100,000 rows/s.

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
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from analysis import pareto_frontier
from resultsdb import ResultsStore, migrate

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SWEEP = "bench"
TARGET_FRONTIER_P50_MS = 50.0
TARGET_EXPORT_ROWS_PER_S = 100_000
SERVER_START_TIMEOUT_S = 60.0
WRITE_BATCH_TRIALS = 200
console = Console()


def maintenance_engine(server_url: str):
    url = make_url(server_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def seed(store: ResultsStore, trials: int, steps: int) -> None:
    """A sweep of `trials` trials over 10 budgets x 20 values of d_m x seeds, each with `steps` bpc points."""
    store.create_sweep(SWEEP, task="enwik8", metric="bpc", mode="min", spec_text=f"benchmark {trials}x{steps}")
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
            seed(store, args.trials, args.steps)
            console.print(f"seeded {args.trials:,} trials, {args.trials * args.steps:,} series rows "
                          f"in {time.perf_counter() - started:.0f} s")
            with maintenance_engine(database_url).connect() as connection:
                connection.execute(text("VACUUM ANALYZE"))
            naive_ms = []
            for _ in range(3):
                started = time.perf_counter()
                naive_points = naive_frontier(store)
                naive_ms.append(1000 * (time.perf_counter() - started))

        port = free_port()
        server = start_server(database_url, port)
        base = f"http://127.0.0.1:{port}/api/v1/sweeps/{SWEEP}"
        with httpx.Client(timeout=120) as client:
            frontier_cold, frontier = latencies_ms(client, f"{base}/frontier?aggregate_seeds=false", args.requests)
            api_points = client.get(f"{base}/frontier?aggregate_seeds=false").json()["points"]
            optimum_cold, optimum = latencies_ms(client, f"{base}/optimum", args.requests)
            export_rates = {}
            for file_format in ("csv", "parquet", "arrow"):
                seconds = []
                for _ in range(5):
                    started = time.perf_counter()
                    size = len(client.get(f"{base}/export?format={file_format}").raise_for_status().content)
                    seconds.append(time.perf_counter() - started)
                export_rates[file_format] = (args.trials / statistics.median(seconds), size)

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
        frontier_ok = percentile(frontier, 50) <= TARGET_FRONTIER_P50_MS
        export_ok = min(rate for rate, _ in export_rates.values()) >= TARGET_EXPORT_ROWS_PER_S
        console.print(f"targets: frontier p50 {'met' if frontier_ok else 'MISSED'}, "
                      f"export {'met' if export_ok else 'MISSED'}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep:
            with maintenance_engine(server_url).connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
