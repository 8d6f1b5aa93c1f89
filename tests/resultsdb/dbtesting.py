"""Helpers for the results database tests: planned trials, a sweep, table snapshots."""

from __future__ import annotations

from sqlalchemy import select

from resultsdb import ResultsStore
from resultsdb.models import MetricPoint, TrialSummary

SWEEP = "pareto"


def allocation(index: int, **overrides) -> dict:
    """A planned trial: distinct config per index, allocation columns that vary with it."""
    d_m = 5 * (1 + index % 4)
    trial = {
        "config": {"d_m": d_m, "index": index},
        "seed": index % 2,
        "budget": 100_000 * (1 + index % 3),
        "n_hidden": 100 + 10 * index,
        "d_m": d_m,
        "d_mlp": 2 * d_m,
        "l_mlp": 1,
        "d_tree": 10,
        "d_branch": 5,
        "rho_rec": round(0.1 * (index % 10), 1),
        "k_e": 50 + index,
        "k_c": 50,
        "params_total": 99_000 + 100 * index,
    }
    trial.update(overrides)
    return trial


def create_sweep(store: ResultsStore, name: str = SWEEP, trials: int = 6) -> list[str]:
    """A sweep (metric bpc: min; accuracy: max) with `trials` pending trials; returns their ids."""
    store.create_sweep(
        name, task="enwik8", metric="bpc", mode="min", spec_text=f"name: {name}", metric_modes={"accuracy": "max"}
    )
    return store.add_trials(name, [allocation(index) for index in range(trials)])


def table_rows(store: ResultsStore, trial_ids: list[str] | None = None) -> dict[str, list[tuple]]:
    """Every series and summary row, sorted; with `trial_ids`, only theirs, with the id replaced
    by its position in the list (to compare two sweeps that received the same points)."""
    with store.engine.connect() as connection:
        tables = {
            model.__tablename__: [tuple(row) for row in connection.execute(select(*model.__table__.c))]
            for model in (MetricPoint, TrialSummary)
        }
    if trial_ids is not None:
        position = {trial_id: index for index, trial_id in enumerate(trial_ids)}
        tables = {
            name: [(position[row[0]], *row[1:]) for row in rows if row[0] in position]
            for name, rows in tables.items()
        }
    return {name: sorted(rows) for name, rows in tables.items()}


def write_in_batches(url: str, points: list[tuple], seed: int, batch_size: int, start) -> None:
    """Concurrency worker: wait for the others, then write `points` shuffled, in batches."""
    import random

    rng = random.Random(seed)
    shuffled = points[:]
    rng.shuffle(shuffled)
    with ResultsStore(url) as store:
        start.wait(timeout=60)
        for begin in range(0, len(shuffled), batch_size):
            store.write_results(shuffled[begin : begin + batch_size])
