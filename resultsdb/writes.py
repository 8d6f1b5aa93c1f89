"""Batched idempotent writes of metric points, trial summaries and events (internal to resultsdb).

Rules that make a batch safe to deliver twice or out of order:
- a point is keyed by (trial, metric, step); a re-delivered point replaces the stored one only if
  its (wall_time, value) is larger, so the surviving point does not depend on delivery order;
- summaries are merged with order-independent rules (min, max, best with the earliest step on ties,
  last = the point at the largest step, ties broken like the series), so they are a function of the
  set of delivered points; a superseded value still counts towards min/max/best;
- a "results" event is appended only for trials whose stored points changed, so a duplicate batch
  appends nothing.
Every statement visits its keys in sorted order, so concurrent writers cannot deadlock on each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, String, Text, and_, bindparam, case, cast, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from resultsdb.models import Event, MetricMode, MetricPoint, Sweep, Trial, TrialSummary

# Postgres advisory lock held from the event insert to commit, so event ids grow in commit order
# and a reader polling "id > last seen" never skips an event committed late.
EVENT_APPEND_LOCK = 0x656C_6D73

PointKey = tuple[str, str, int]  # (trial_id, metric, step)
Point = tuple[float, float | None]  # (wall_time, value)
Columns = dict[str, list[Any]]  # column name -> values, one per row


@dataclass(frozen=True)
class TrialContext:
    """What the writer needs to know about a trial: its sweep and the mode of each metric."""

    sweep_id: int
    default_mode: str
    metric_modes: Mapping[str, str]

    def mode(self, metric: str) -> str:
        return self.metric_modes.get(metric, self.default_mode)


def rank(point: Point) -> tuple[float, float]:
    """Order among deliveries of the same key: the larger rank is kept."""
    wall_time, value = point
    return (wall_time, -math.inf if value is None else value)


def now() -> datetime:
    return datetime.now(UTC)


def dialect_insert(connection: Connection, model: type) -> Insert:
    """INSERT with the dialect's ON CONFLICT support (Postgres and SQLite share the API)."""
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    return insert(model)


def _postgres_array(values: Sequence[Any], quoted: bool) -> str:
    if quoted:
        items = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    else:
        items = ("NULL" if value is None else repr(value) for value in values)
    return "{" + ",".join(items) + "}"


def bulk_insert(connection: Connection, model: type, columns: Columns) -> tuple[Insert, Any]:
    """An INSERT of many rows given column-wise, and the parameters to execute it with.

    Postgres gets one statement over unnest()ed arrays passed as array text: psycopg would adapt
    Python lists element by element, and a long multi-row VALUES costs it a client-side parse per
    statement; either would dominate ingest time. SQLite gets an executemany (in-process, fast).
    """
    statement = dialect_insert(connection, model)
    names = list(columns)
    if connection.dialect.name != "postgresql":
        return statement, [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    types = [model.__table__.c[name].type for name in names]
    # Text arrays are cast to text[]: the column's collation is applied on assignment.
    element_types = [Text() if isinstance(type_, String) else type_ for type_ in types]
    arrays = [
        cast(bindparam(f"{name}_array", type_=Text), ARRAY(element_type))
        for name, element_type in zip(names, element_types)
    ]
    source = func.unnest(*arrays).table_valued(*names).render_derived()
    statement = statement.from_select(names, select(*(source.c[name] for name in names)))
    parameters = {
        f"{name}_array": _postgres_array(columns[name], isinstance(type_, String))
        for name, type_ in zip(names, types)
    }
    return statement, parameters


def normalize_results(
    batch: Iterable[tuple[str, int, Mapping[str, float | None], float]],
) -> dict[PointKey, Point]:
    """Flatten (trial_id, step, {metric: value}, wall_time) items into one point per key."""
    points: dict[PointKey, Point] = {}
    for index, item in enumerate(batch):
        try:
            trial_id, step, metrics, wall_time = item
            trial_id, step, wall_time = str(trial_id), int(step), float(wall_time)
        except (TypeError, ValueError):
            raise ValueError(
                f"result {index}: expected (trial_id, step, {{metric: value}}, wall_time), got {item!r}"
            ) from None
        for metric, raw_value in metrics.items():
            value = None if raw_value is None or math.isnan(raw_value) else float(raw_value)
            key, point = (trial_id, str(metric), step), (wall_time, value)
            known = points.get(key)
            if known is None or rank(point) > rank(known):
                points[key] = point
    return points


def trial_contexts(connection: Connection, trial_ids: Iterable[str]) -> dict[str, TrialContext]:
    rows = connection.execute(
        select(Trial.id, Trial.sweep_id, Sweep.mode, Sweep.metric_modes)
        .join(Sweep, Sweep.id == Trial.sweep_id)
        .where(Trial.id.in_(sorted(set(trial_ids))))
    )
    return {row.id: TrialContext(row.sweep_id, row.mode, row.metric_modes) for row in rows}


def upsert_points(connection: Connection, points: Mapping[PointKey, Point]) -> list[tuple[str, int]]:
    """Insert or replace points; returns (trial_id, step) of every stored row that changed."""
    keys = sorted(points)
    columns: Columns = {
        "trial_id": [trial_id for trial_id, _, _ in keys],
        "metric": [metric for _, metric, _ in keys],
        "step": [step for _, _, step in keys],
        "value": [points[key][1] for key in keys],
        "wall_time": [points[key][0] for key in keys],
    }
    statement, parameters = bulk_insert(connection, MetricPoint, columns)
    stored, incoming = MetricPoint.__table__.c, statement.excluded
    replaces = or_(
        incoming.wall_time > stored.wall_time,
        and_(incoming.wall_time == stored.wall_time, incoming.value > stored.value),
    )
    statement = statement.on_conflict_do_update(
        index_elements=[stored.trial_id, stored.metric, stored.step],
        set_={"value": incoming.value, "wall_time": incoming.wall_time},
        where=replaces,
    ).returning(stored.trial_id, stored.step)
    return [(trial_id, step) for trial_id, step in connection.execute(statement, parameters).all()]


SUMMARY_FIELDS = (
    "trial_id",
    "metric",
    "last_step",
    "last_value",
    "last_wall_time",
    "min_value",
    "max_value",
    "best_value",
    "best_step",
)


def summarize(points: Mapping[PointKey, Point], contexts: Mapping[str, TrialContext]) -> dict[str, Columns]:
    """Aggregate a batch per (trial, metric), column-wise and grouped by the metric's mode."""
    by_mode: dict[str, Columns] = {}
    for (trial_id, metric), group in groupby(sorted(points), key=lambda key: key[:2]):
        steps = [key[2] for key in group]  # ascending
        mode = contexts[trial_id].mode(metric)
        last_wall_time, last_value = points[(trial_id, metric, steps[-1])]
        valued = [(step, value) for step in steps if (value := points[(trial_id, metric, step)][1]) is not None]
        values = [value for _, value in valued]
        best_step = best_value = None
        if valued:
            best_value = min(values) if mode == MetricMode.MIN else max(values)
            best_step = next(step for step, value in valued if value == best_value)
        row = (
            trial_id,
            metric,
            steps[-1],
            last_value,
            last_wall_time,
            min(values, default=None),
            max(values, default=None),
            best_value,
            best_step,
        )
        columns = by_mode.setdefault(mode, {field: [] for field in SUMMARY_FIELDS})
        for field, value in zip(SUMMARY_FIELDS, row, strict=True):
            columns[field].append(value)
    return by_mode


def merge_summaries(connection: Connection, mode: str, columns: Columns) -> None:
    """Merge batch aggregates into trial_summary with order-independent rules."""
    statement, parameters = bulk_insert(connection, TrialSummary, columns)
    stored, incoming = TrialSummary.__table__.c, statement.excluded
    incoming_is_later = or_(
        stored.last_step.is_(None),
        incoming.last_step > stored.last_step,
        and_(
            incoming.last_step == stored.last_step,
            or_(
                incoming.last_wall_time > stored.last_wall_time,
                and_(
                    incoming.last_wall_time == stored.last_wall_time,
                    incoming.last_value > stored.last_value,
                ),
            ),
        ),
    )
    strictly_better = (
        incoming.best_value < stored.best_value
        if mode == MetricMode.MIN
        else incoming.best_value > stored.best_value
    )
    incoming_is_best = and_(
        incoming.best_value.is_not(None),
        or_(
            stored.best_value.is_(None),
            strictly_better,
            and_(incoming.best_value == stored.best_value, incoming.best_step < stored.best_step),
        ),
    )

    def pick(condition, column: str):
        return case((condition, incoming[column]), else_=stored[column])

    statement = statement.on_conflict_do_update(
        index_elements=[stored.trial_id, stored.metric],
        set_={
            "last_step": pick(incoming_is_later, "last_step"),
            "last_value": pick(incoming_is_later, "last_value"),
            "last_wall_time": pick(incoming_is_later, "last_wall_time"),
            "min_value": pick(
                or_(stored.min_value.is_(None), incoming.min_value < stored.min_value), "min_value"
            ),
            "max_value": pick(
                or_(stored.max_value.is_(None), incoming.max_value > stored.max_value), "max_value"
            ),
            "best_value": pick(incoming_is_best, "best_value"),
            "best_step": pick(incoming_is_best, "best_step"),
        },
    )
    connection.execute(statement, parameters)


def set_final_values(connection: Connection, trial_id: str, final: Mapping[str, float]) -> None:
    statement = dialect_insert(connection, TrialSummary)
    statement = statement.on_conflict_do_update(
        index_elements=[TrialSummary.trial_id, TrialSummary.metric],
        set_={"final_value": statement.excluded.final_value},
    )
    rows = [
        {"trial_id": trial_id, "metric": metric, "final_value": None if math.isnan(v) else float(v)}
        for metric, v in sorted(final.items())
    ]
    connection.execute(statement, rows)


def result_events(
    points: Mapping[PointKey, Point],
    changed: Iterable[tuple[str, int]],
    contexts: Mapping[str, TrialContext],
) -> list[dict[str, Any]]:
    """One "results" event per sweep: for each trial with changed points, its newest changed step
    and the values there (one event per trial would make appending events cost more than the points)."""
    newest: dict[str, int] = {}
    for trial_id, step in changed:
        newest[trial_id] = max(step, newest.get(trial_id, step))
    metrics = sorted({metric for _, metric, _ in points})
    trials_by_sweep: dict[int, dict[str, Any]] = {}
    for trial_id, step in sorted(newest.items()):
        values = {m: points[(trial_id, m, step)][1] for m in metrics if (trial_id, m, step) in points}
        trials_by_sweep.setdefault(contexts[trial_id].sweep_id, {})[trial_id] = {"step": step, "values": values}
    return [
        {"kind": "results", "sweep_id": sweep_id, "payload": {"trials": trials}}
        for sweep_id, trials in sorted(trials_by_sweep.items())
    ]


def append_events(connection: Connection, events: Sequence[dict[str, Any]]) -> list[int]:
    """Append events as the last statement of a transaction; returns their ids."""
    if not events:
        return []
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_APPEND_LOCK})
    created_at = now()
    rows = [
        {
            "created_at": created_at,
            "kind": event["kind"],
            "sweep_id": event.get("sweep_id"),
            "trial_id": event.get("trial_id"),
            "payload": event.get("payload") or {},
        }
        for event in events
    ]
    statement = dialect_insert(connection, Event).returning(Event.id, sort_by_parameter_order=True)
    return [row.id for row in connection.execute(statement, rows)]
