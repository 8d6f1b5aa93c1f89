"""Helpers for the results database tests: table snapshots and a concurrent writer."""

from __future__ import annotations

from sqlalchemy import select

from resultsdb import ResultsStore
from resultsdb.models import MetricPoint, TrialSummary


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
