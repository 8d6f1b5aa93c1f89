"""Batched idempotent writes of metric points, trial summaries and events (internal to resultsdb).

Every function here runs inside the caller's transaction and commits nothing.

Rules that make a batch safe to deliver twice or out of order:
- a point is keyed by (trial, metric, step); a re-delivered point replaces the stored one only if
  its (wall_time, value) is larger, so the surviving point does not depend on delivery order;
- a trial's summary of a metric is merged by one order-independent rule, ``merge_summaries`` (min,
  max, best with the earliest step on ties, last = the point at the largest step, ties broken like
  the series), so it is a function of the set of delivered batches; a value superseded by a later
  batch still counts towards min/max/best, one superseded inside its own batch does not (see below);
- a "results" event is appended only for trials whose stored points changed, so a duplicate batch
  appends nothing.
Every statement visits its keys in sorted order, so concurrent writers cannot deadlock on each other.

Within a batch, a key delivered twice keeps the point of larger rank before anything is written.

Two carriers apply these rules. SQLite (in-process): ``PointBatch`` keeps one point per key and
writes with executemany, each point merged into its summary as a summary of itself. Postgres:
``CopyBatch`` COPYs the batch (binary) into a temporary table of the session; then one statement
keeps one point per key, inserts them into the series, merges the summaries and returns what the
events need (per-point parameters cost more than the server's work). One INSERT cannot update a row
twice, so there the batch is first folded per (trial, metric) by ``batch_aggregates``: the same
rule over a set of points, as aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    case,
    exc,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.event import contains, listen
from sqlalchemy.sql.selectable import CTE

from resultsdb.models import Event, MetricMode, MetricPoint, Sweep, Trial, TrialSummary

# Postgres advisory lock held from the event insert to commit, so event ids grow in commit order
# and a reader polling "id > last seen" never skips an event committed late.
EVENT_APPEND_LOCK = 0x656C_6D73

PointKey = tuple[str, str, int]  # (trial_id, metric, step)
Point = tuple[float, float | None]  # (wall_time, value)
ResultItem = tuple[str, int, Mapping[str, float | None], float]  # (trial_id, step, {metric: value}, wall_time)
PointRow = tuple[str, int, float, str, float | None]  # (trial_id, step, wall_time, metric, value)
# Per trial with changed points: its newest changed step and the batch's values at that step.
Changes = dict[str, tuple[int, dict[str, float | None]]]


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


# Both dialects' INSERT, with the same ON CONFLICT API.
Insert = PostgresqlInsert | SqliteInsert


def dialect_insert(connection: Connection, model: type) -> Insert:
    """INSERT with the dialect's ON CONFLICT support (Postgres and SQLite share the API)."""
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    return insert(model)


def storable(value: float | None) -> float | None:
    """A metric value as stored: NaN becomes None (NULL), since SQLite cannot store NaN."""
    return None if value is None or math.isnan(value) else float(value)


def point_rows(batch: Iterable[ResultItem]) -> list[PointRow]:
    """Flatten (trial_id, step, {metric: value}, wall_time) items into one row per point, in the order
    given, each value storable."""
    rows: list[PointRow] = []
    for index, item in enumerate(batch):
        try:
            trial_id, step, metrics, wall_time = item
            trial_id, step, wall_time = str(trial_id), int(step), float(wall_time)
        except (TypeError, ValueError):
            raise ValueError(
                f"result {index}: expected (trial_id, step, {{metric: value}}, wall_time), got {item!r}"
            ) from None
        for metric, value in metrics.items():
            rows.append((trial_id, step, wall_time, str(metric), storable(value)))
    return rows


def trial_contexts(connection: Connection, trial_ids: Iterable[str]) -> dict[str, TrialContext]:
    rows = connection.execute(
        select(Trial.id, Trial.sweep_id, Sweep.mode, Sweep.metric_modes)
        .join(Sweep, Sweep.id == Trial.sweep_id)
        .where(Trial.id.in_(sorted(set(trial_ids))))
    )
    return {row.id: TrialContext(row.sweep_id, row.mode, row.metric_modes) for row in rows}


def replace_older_points(statement: Insert) -> Insert:
    """ON CONFLICT rule of the series: the point of larger rank survives."""
    stored, incoming = MetricPoint.__table__.c, statement.excluded
    replaces = or_(
        incoming.wall_time > stored.wall_time,
        and_(incoming.wall_time == stored.wall_time, incoming.value > stored.value),
    )
    return statement.on_conflict_do_update(
        index_elements=[stored.trial_id, stored.metric, stored.step],
        set_={"value": incoming.value, "wall_time": incoming.wall_time},
        where=replaces,
    )


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


def merge_summaries(statement: Insert, mode: str) -> Insert:
    """The summary rule: ON CONFLICT clauses that merge an incoming summary (of a metric in `mode`) into the
    stored one. Merging is associative and commutative, so summaries fold in any order."""
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

    return statement.on_conflict_do_update(
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


# SQLite: points and summaries computed here, written with executemany.


@dataclass(frozen=True)
class PointBatch:
    """One point per key, the largest rank kept (SQLite)."""

    points: dict[PointKey, Point]

    @classmethod
    def from_rows(cls, rows: Iterable[PointRow]) -> PointBatch:
        points: dict[PointKey, Point] = {}
        for trial_id, step, wall_time, metric, value in rows:
            key, point = (trial_id, metric, step), (wall_time, value)
            known = points.get(key)
            if known is None or rank(point) > rank(known):
                points[key] = point
        return cls(points)

    @property
    def trial_ids(self) -> set[str]:
        return {trial_id for trial_id, _, _ in self.points}

    def chunks(self, size: int) -> list[PointBatch]:
        keys = sorted(self.points)
        return [
            PointBatch({key: self.points[key] for key in keys[start : start + size]})
            for start in range(0, len(keys), size)
        ]

    def write(self, connection: Connection, contexts: Mapping[str, TrialContext]) -> tuple[int, Changes]:
        """Upsert the points and merge their summaries; returns how many points changed, and the changes."""
        changed = upsert_points(connection, self.points)
        for mode, rows in sorted(point_summaries(self.points, contexts).items()):
            connection.execute(merge_summaries(sqlite_insert(TrialSummary), mode), rows)
        return len(changed), newest_changes(self.points, changed)


def upsert_points(connection: Connection, points: Mapping[PointKey, Point]) -> list[tuple[str, int]]:
    """Insert or replace points; returns (trial_id, step) of every stored row that changed."""
    rows = [
        {"trial_id": trial_id, "metric": metric, "step": step, "value": value, "wall_time": wall_time}
        for (trial_id, metric, step), (wall_time, value) in sorted(points.items())
    ]
    stored = MetricPoint.__table__.c
    statement = replace_older_points(sqlite_insert(MetricPoint)).returning(stored.trial_id, stored.step)
    return [(trial_id, step) for trial_id, step in connection.execute(statement, rows).all()]


def point_summaries(
    points: Mapping[PointKey, Point], contexts: Mapping[str, TrialContext]
) -> dict[str, list[dict[str, Any]]]:
    """Each point as the summary of itself, grouped by its metric's mode, in key order: executemany applies
    ``merge_summaries`` once per point, which folds them into the stored summaries."""
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for (trial_id, metric, step), (wall_time, value) in sorted(points.items()):
        row = (trial_id, metric, step, value, wall_time, value, value, value, None if value is None else step)
        by_mode.setdefault(contexts[trial_id].mode(metric), []).append(dict(zip(SUMMARY_FIELDS, row, strict=True)))
    return by_mode


def newest_changes(points: Mapping[PointKey, Point], changed: Iterable[tuple[str, int]]) -> Changes:
    newest: dict[str, int] = {}
    for trial_id, step in changed:
        newest[trial_id] = max(step, newest.get(trial_id, step))
    metrics = sorted({metric for _, metric, _ in points})
    return {
        trial_id: (step, {m: points[(trial_id, m, step)][1] for m in metrics if (trial_id, m, step) in points})
        for trial_id, step in newest.items()
    }


# Postgres: the batch is COPYed into a temporary table of the session and merged by the server.

# Columns in PointRow order; the key columns compare byte-wise, like the tables' ("C" collation).
BATCH_TABLE = Table(
    "elmscale_ingest_batch",
    MetaData(),
    Column("trial_id", Text(collation="C")),
    # Wider than the series' step: the binary int4 format would wrap a larger step around silently,
    # where the insert into the series refuses it ("integer out of range").
    Column("step", BigInteger),
    Column("wall_time", Double),
    Column("metric", Text(collation="C")),
    Column("value", Double),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
# Binary COPY: no float formatting here nor parsing there; each column's Postgres type is named.
COPY_INTO_BATCH = f"COPY {BATCH_TABLE.name} ({', '.join(BATCH_TABLE.c.keys())}) FROM STDIN (FORMAT BINARY)"
BATCH_COPY_TYPES = ("text", "int8", "float8", "text", "float8")
# Key in the info of a DBAPI connection (it lives as long as the session and its temporary table).
BATCH_TABLE_CREATED = "elmscale_batch_table_created"
UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class CopyBatch:
    """Points as delivered, duplicates included, merged by the server (Postgres)."""

    rows: list[PointRow]

    @property
    def trial_ids(self) -> set[str]:
        return {row[0] for row in self.rows}

    def chunks(self, size: int) -> list[CopyBatch]:
        return [CopyBatch(self.rows[start : start + size]) for start in range(0, len(self.rows), size)]

    def write(self, connection: Connection, contexts: Mapping[str, TrialContext]) -> tuple[int, Changes]:
        """Like PointBatch.write; the server reads each metric's mode itself, so `contexts` is not needed."""
        ensure_batch_table(connection)
        driver_connection = connection.connection.driver_connection
        assert driver_connection is not None  # a live psycopg connection: COPY is chosen only on Postgres
        with (
            driver_errors_raised_like_execute(connection, COPY_INTO_BATCH),
            driver_connection.cursor() as cursor,
            cursor.copy(COPY_INTO_BATCH) as copy,
        ):
            copy.set_types(BATCH_COPY_TYPES)
            for row in self.rows:
                copy.write_row(row)
        # Most batches bring only new points: with a plain INSERT a whole flush took a third less time
        # than with INSERT ... ON CONFLICT. When a point is stored already, the savepoint undoes it.
        try:
            with connection.begin_nested():
                newest = connection.execute(INSERT_NEW_BATCH).all()
        except exc.IntegrityError as error:
            if getattr(error.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            newest = connection.execute(UPSERT_BATCH).all()
        changed = 0
        changes: Changes = {}
        for trial_id, step, changed_points, metric, value in newest:
            if trial_id not in changes:
                changes[trial_id] = (step, {})
                changed += changed_points
            changes[trial_id][1][metric] = value
        return changed, changes


@contextmanager
def driver_errors_raised_like_execute(connection: Connection, statement: str) -> Iterator[None]:
    """Errors of work done on the driver connection, wrapped as execute() wraps them (so that, e.g.,
    a refused value is a ``sqlalchemy.exc.DataError``)."""
    driver_error = connection.dialect.loaded_dbapi.Error
    try:
        yield
    except driver_error as error:
        raise exc.DBAPIError.instance(statement, None, error, driver_error) from error


def ensure_batch_table(connection: Connection) -> None:
    """Create the session's batch table on first use (checkfirst: a rollback may have dropped it)."""
    if connection.info.get(BATCH_TABLE_CREATED):
        return
    if not contains(connection.engine, "rollback", forget_batch_table):
        listen(connection.engine, "rollback", forget_batch_table)
    BATCH_TABLE.create(connection, checkfirst=True)
    connection.info[BATCH_TABLE_CREATED] = True


def forget_batch_table(connection: Connection) -> None:
    """A rolled-back transaction takes a table it created along; an invalidated connection has no table."""
    if not connection.invalidated:
        connection.info.pop(BATCH_TABLE_CREATED, None)


def batch_points() -> CTE:
    """The batch with one point per key, the largest rank kept, in key order."""
    batch = BATCH_TABLE.c
    return (
        select(batch.trial_id, batch.metric, batch.step, batch.value, batch.wall_time)
        .ext(distinct_on(batch.trial_id, batch.metric, batch.step))
        .order_by(batch.trial_id, batch.metric, batch.step, batch.wall_time.desc(), batch.value.desc().nulls_last())
        .cte("points")
    )


def batch_aggregates(points: CTE) -> CTE:
    """Per (trial, metric) of the batch: its mode and the fold of its points by ``merge_summaries``, with the
    best step for either mode. Window aggregates, then filtered ones: ordered aggregates (array_agg with
    ORDER BY) sort every group apart and cost several times more."""
    group = (points.c.trial_id, points.c.metric)
    framed = select(
        points,
        func.max(points.c.step).over(partition_by=group).label("last_step"),
        func.min(points.c.value).over(partition_by=group).label("min_value"),
        func.max(points.c.value).over(partition_by=group).label("max_value"),
    ).subquery("framed")
    at_last_step = framed.c.step == framed.c.last_step  # one point: the batch has one per key
    grouped = (
        select(
            framed.c.trial_id,
            framed.c.metric,
            func.max(framed.c.step).label("last_step"),
            func.max(framed.c.value).filter(at_last_step).label("last_value"),
            func.max(framed.c.wall_time).filter(at_last_step).label("last_wall_time"),
            func.min(framed.c.value).label("min_value"),
            func.max(framed.c.value).label("max_value"),
            func.min(framed.c.step).filter(framed.c.value == framed.c.min_value).label("min_step"),
            func.min(framed.c.step).filter(framed.c.value == framed.c.max_value).label("max_step"),
        )
        .group_by(framed.c.trial_id, framed.c.metric)
        .subquery("grouped")
    )
    # TrialContext.mode, on the server: per group a subquery, which looks its trial up by primary key
    # (a join would read every trial of the database) and parses the sweep's JSON once.
    mode = (
        select(func.coalesce(Sweep.metric_modes[grouped.c.metric].as_string(), Sweep.mode))
        .join_from(Trial, Sweep, Sweep.id == Trial.sweep_id)
        .where(Trial.id == grouped.c.trial_id)
        .scalar_subquery()
    )
    return select(grouped, mode.label("mode")).cte("aggregates")


def merge_batch_summaries(aggregates: CTE, mode: str) -> CTE:
    """Merge the aggregates of metrics in `mode` into trial_summary."""
    best_value, best_step = (
        (aggregates.c.min_value, aggregates.c.min_step)
        if mode == MetricMode.MIN
        else (aggregates.c.max_value, aggregates.c.max_step)
    )
    shared = (aggregates.c[field] for field in SUMMARY_FIELDS if not field.startswith("best_"))
    summaries = (
        select(*shared, best_value, best_step)
        .where(aggregates.c.mode == mode)
        .order_by(aggregates.c.trial_id, aggregates.c.metric)
    )
    return merge_summaries(postgresql_insert(TrialSummary).from_select(SUMMARY_FIELDS, summaries), mode).cte(
        f"merge_{mode}"
    )


def apply_batch(points_are_new: bool) -> Select:
    """One statement: insert (`points_are_new`: failing on a stored key) or upsert the batch's points,
    merge its summaries, and return, for each trial with changed points, one row per metric the batch
    has at the trial's newest changed step: (trial_id, step, points changed in the trial, metric, value)."""
    points = batch_points()
    stored = MetricPoint.__table__.c
    # In key order: the order of `points` (a second ORDER BY here would sort again).
    insert: Insert = postgresql_insert(MetricPoint).from_select(list(points.c.keys()), select(points))
    if not points_are_new:
        insert = replace_older_points(insert)
    changed = insert.returning(stored.trial_id, stored.step).cte("changed")
    aggregates = batch_aggregates(points)
    newest = (
        select(changed.c.trial_id, func.max(changed.c.step).label("step"), func.count().label("changed"))
        .group_by(changed.c.trial_id)
        .subquery("newest")
    )
    return (
        select(newest.c.trial_id, newest.c.step, newest.c.changed, points.c.metric, points.c.value)
        .join_from(newest, points, and_(points.c.trial_id == newest.c.trial_id, points.c.step == newest.c.step))
        .order_by(newest.c.trial_id, points.c.metric)
        .add_cte(*(merge_batch_summaries(aggregates, mode) for mode in sorted(MetricMode)))
    )


INSERT_NEW_BATCH = apply_batch(points_are_new=True)
UPSERT_BATCH = apply_batch(points_are_new=False)


def set_final_values(connection: Connection, finals: Mapping[str, Mapping[str, float]]) -> None:
    """Store {trial_id: {metric: test value}} as the summaries' final values, in key order."""
    rows = [
        {"trial_id": trial_id, "metric": metric, "final_value": storable(value)}
        for trial_id, final in sorted(finals.items())
        for metric, value in sorted(final.items())
    ]
    if not rows:
        return
    statement = dialect_insert(connection, TrialSummary)
    statement = statement.on_conflict_do_update(
        index_elements=[TrialSummary.trial_id, TrialSummary.metric],
        set_={"final_value": statement.excluded.final_value},
    )
    connection.execute(statement, rows)


def result_events(changes: Changes, contexts: Mapping[str, TrialContext]) -> list[dict[str, Any]]:
    """One "results" event per sweep: for each trial with changed points, its newest changed step
    and the values there (one event per trial would make appending events cost more than the points)."""
    trials_by_sweep: dict[int, dict[str, Any]] = {}
    for trial_id, (step, values) in sorted(changes.items()):
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
