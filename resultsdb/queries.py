"""Reads of the results database (internal to resultsdb): the one not-found finder, sweeps, trials,
summaries and events, each in the caller's transaction.

Trial queries filter, sort, page by keyset cursors and project: a field is a trial column
(``TRIAL_FIELDS``) or ``"<metric>.<stat>"`` with a stat of ``SUMMARY_STATS``, read from the trial
summary (e.g. ``"bpc.best"``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    FromClause,
    Integer,
    Row,
    Select,
    and_,
    case,
    false,
    func,
    or_,
    select,
    true,
)

from resultsdb.errors import InvalidQuery, NotFound, UnknownMetric
from resultsdb.models import ALLOCATION_COLUMNS, Event, MetricPoint, Sweep, Trial, TrialStatus, TrialSummary
from resultsdb.records import EventInfo, MetricSummary, SweepInfo, TrialInfo, TrialPage

TRIAL_FIELDS = (
    "id",
    "status",
    *ALLOCATION_COLUMNS,
    "attempts",
    "error",
    "node",
    "device",
    "created_at",
    "started_at",
    "ended_at",
    "status_at",
    "config",
)
DEFAULT_FIELDS = ("id", "status", *ALLOCATION_COLUMNS)
DATETIME_FIELDS = frozenset({"created_at", "started_at", "ended_at", "status_at"})
# The trial columns of a summary frame (resultsdb.frames), before its "<metric>.<stat>" columns.
TRIAL_FRAME_COLUMNS = (
    "id", "status", *ALLOCATION_COLUMNS, "attempts", "error", "node", "device", "started_at", "ended_at"
)
SUMMARY_STATS = {
    "last": "last_value",
    "last_step": "last_step",
    "min": "min_value",
    "max": "max_value",
    "best": "best_value",
    "best_step": "best_step",
    "final": "final_value",
}
UNSORTABLE_FIELDS = {"config", "error"}


@dataclass(frozen=True)
class Range:
    """Inclusive bounds for a filter; either side may be open (None)."""

    low: float | None = None
    high: float | None = None


Condition = Range | Collection[Any] | str | float | int


@overload
def utc(moment: datetime) -> datetime: ...


@overload
def utc(moment: datetime | None) -> datetime | None: ...


def utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every datetime leaving resultsdb is aware UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def metric_stat(field: str) -> tuple[str, str]:
    """The (metric, stat) of a "<metric>.<stat>" field; InvalidQuery naming the field otherwise."""
    metric, _, stat = field.rpartition(".")
    if not metric or stat not in SUMMARY_STATS:
        raise InvalidQuery(
            f"field {field!r}: expected a trial column ({', '.join(TRIAL_FIELDS)}) "
            f"or '<metric>.<stat>' with stat one of {', '.join(SUMMARY_STATS)}"
        )
    return metric, stat


class TrialQuery:
    """Resolves field names to columns: trial columns, and "<metric>.<stat>" columns of one pivot of the summaries
    (a column per field), joined once, so the cost grows linearly with the fields.

    On Postgres the pivot is a LATERAL subquery, one primary-key lookup per trial, so that a page in the order of
    a trial column reads the summaries of its own rows only; SQLite has no LATERAL and groups the sweep's summaries.
    """

    def __init__(self, sweep_id: int, fields: Iterable[str], *, lateral: bool) -> None:
        metric_fields = list(dict.fromkeys(field for field in fields if field not in TRIAL_FIELDS))
        stats = [metric_stat(field) for field in metric_fields]
        self.metrics = list(dict.fromkeys(metric for metric, _ in stats))
        self.lateral = lateral
        self.pivot: FromClause | None = None
        self.pivot_columns: dict[str, ColumnElement[Any]] = {}
        if not stats:
            return
        # (trial_id, metric) is the key, so each max() sees at most one value: the value itself, or NULL.
        values = [
            func.max(case((TrialSummary.metric == metric, getattr(TrialSummary, SUMMARY_STATS[stat]))))
            .label(f"value_{index}")
            for index, (metric, stat) in enumerate(stats)
        ]
        summaries = select(*values).where(TrialSummary.metric.in_(self.metrics))
        if lateral:
            self.pivot = summaries.where(TrialSummary.trial_id == Trial.id).lateral("summaries")
        else:
            self.pivot = (
                summaries.add_columns(TrialSummary.trial_id)
                .join(Trial, Trial.id == TrialSummary.trial_id)
                .where(Trial.sweep_id == sweep_id)
                .group_by(TrialSummary.trial_id)
                .subquery("summaries")
            )
        self.pivot_columns = {field: self.pivot.c[value.name] for field, value in zip(metric_fields, values)}

    def column(self, field: str) -> ColumnElement[Any]:
        return getattr(Trial, field) if field in TRIAL_FIELDS else self.pivot_columns[field]

    def joined(self, statement: Select) -> Select:
        if self.pivot is None:
            return statement
        # A LATERAL aggregate without GROUP BY yields one row for every trial (NULLs when it has no summary).
        on = true() if self.lateral else self.pivot.c.trial_id == Trial.id
        return statement.outerjoin(self.pivot, on)


def storable(column: ColumnElement[Any], value: Any) -> bool:
    """Whether `value` fits the column's type; an integer beyond its range (a seed past 64 bits, a d_m of 3e9 in a
    32-bit column) equals no stored value, and the databases refuse it as a parameter."""
    if not isinstance(column.type, Integer) or not isinstance(value, int) or isinstance(value, bool):
        return True
    limit = 2**63 if isinstance(column.type, BigInteger) else 2**31
    return -limit <= value < limit


def condition(column: ColumnElement[Any], field: str, wanted: Condition) -> ColumnElement[bool]:
    if isinstance(wanted, Range):
        bounds = []
        if wanted.low is not None:
            bounds.append(column >= wanted.low)
        if wanted.high is not None:
            bounds.append(column <= wanted.high)
        return and_(true(), *bounds)
    if isinstance(wanted, str | int | float):
        return column == wanted if storable(column, wanted) else false()
    if isinstance(wanted, Collection):
        values = sorted((value for value in wanted if storable(column, value)), key=str)
        return column.in_(values) if values else false()
    raise InvalidQuery(f"filter {field!r}: expected a Range, a set of values or one value, got {wanted!r}")


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool

    @classmethod
    def parse(cls, sort: str) -> Sort:
        field = sort.removeprefix("-")
        if field in UNSORTABLE_FIELDS:
            raise InvalidQuery(f"sort {sort!r}: {field} cannot be sorted on")
        return cls(field, sort.startswith("-"))

    def __str__(self) -> str:
        return f"-{self.field}" if self.descending else self.field


def encode_cursor(sort: Sort, value: Any, trial_id: str) -> str:
    if isinstance(value, datetime):
        value = {"datetime": value.isoformat()}
    payload = json.dumps([str(sort), value, trial_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_cursor(cursor: str, sort: Sort, column: ColumnElement[Any]) -> tuple[Any, str]:
    """The (sort value, trial id) of a cursor from encode_cursor; InvalidQuery for anything else, including a
    value the sort column cannot hold."""
    foreign = InvalidQuery(f"cursor {cursor!r}: not a cursor returned by query_trials")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise foreign from None
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[2], str)):
        raise foreign
    issued_for, value, trial_id = decoded
    if issued_for != str(sort):
        raise InvalidQuery(f"cursor was issued for sort {issued_for!r}, not {str(sort)!r}")
    try:
        return sort_value(column, value), trial_id
    except (ValueError, TypeError):
        raise InvalidQuery(f"cursor {cursor!r}: {value!r} is not a value of {sort.field}") from None


def sort_value(column: ColumnElement[Any], value: Any) -> Any:
    """A cursor's sort value as the column holds it (a datetime from its {"datetime": iso} form); ValueError for
    one it cannot hold (TypeError for a time that is not a string): the databases would refuse it or compare across
    types."""
    python_type = column.type.python_type
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is None:
        return None
    if python_type is datetime and isinstance(value, dict) and value.keys() == {"datetime"}:
        return datetime.fromisoformat(value["datetime"])
    if python_type is float and number and math.isfinite(value):
        return value
    if python_type is int and number and isinstance(value, int) and storable(column, value):
        return value
    if issubclass(python_type, str) and isinstance(value, str):
        if issubclass(python_type, enum.Enum) and value not in {member.value for member in python_type}:
            raise ValueError(value)
        return value
    raise ValueError(value)


def after_cursor(column: ColumnElement[Any], sort: Sort, value: Any, trial_id: str) -> ColumnElement[bool]:
    """Rows after (value, id) in the order: non-NULL values (asc or desc), then NULLs; ties by id."""
    later_id = Trial.id > trial_id
    if value is None:
        return and_(column.is_(None), later_id)
    beyond = column < value if sort.descending else column > value
    return or_(column.is_(None), beyond, and_(column == value, later_id))


def order_by(column: ColumnElement[Any], sort: Sort) -> list[ColumnElement[Any]]:
    """NULLs last, ties by id; the terms that cannot matter are left out, so the server sorts less
    (or reads an index in order)."""
    terms: list[ColumnElement[Any]] = [column.desc() if sort.descending else column.asc()]
    if sort.field not in TRIAL_FIELDS or Trial.__table__.c[sort.field].nullable:
        # Explicit NULL placement: Postgres and SQLite disagree on the default.
        terms.insert(0, column.is_(None).asc())
    if sort.field != "id":
        terms.append(Trial.id.asc())
    return terms


def build_trial_query(
    sweep_id: int,
    where: Mapping[str, Condition],
    sort: str,
    fields: Sequence[str],
    limit: int | None,
    cursor: str | None,
    *,
    lateral: bool,
) -> tuple[Select, Sort, list[str]]:
    """The SELECT for one page (its columns: `fields`, distinct, in order) and the metrics it reads; with a limit
    it selects one extra row to tell whether a next page exists, and each row ends with the sort key for the
    next cursor."""
    parsed_sort = Sort.parse(sort)
    query = TrialQuery(sweep_id, [*fields, parsed_sort.field, *where], lateral=lateral)
    selected = [query.column(field).label(field) for field in fields]
    sort_column = query.column(parsed_sort.field)
    filters = [Trial.sweep_id == sweep_id]
    filters += [condition(query.column(field), field, wanted) for field, wanted in where.items()]
    if cursor is not None:
        value, trial_id = decode_cursor(cursor, parsed_sort, sort_column)
        filters.append(after_cursor(sort_column, parsed_sort, value, trial_id))
    statement = select(*selected)
    if limit is not None:
        statement = statement.add_columns(sort_column.label("_sort_value"), Trial.id.label("_trial_id"))
        statement = statement.limit(limit + 1)
    statement = query.joined(statement.select_from(Trial)).where(*filters)
    statement = statement.order_by(*order_by(sort_column, parsed_sort))
    return statement, parsed_sort, query.metrics


def downsampled_series(trial_id: str, metric: str, max_points: int) -> Select:
    """Every stride-th point plus the last one, stride = ceil(count / max_points)."""
    numbered = (
        select(
            MetricPoint.step,
            MetricPoint.value,
            MetricPoint.wall_time,
            func.row_number().over(order_by=MetricPoint.step).label("position"),
            func.count().over().label("total"),
        )
        .where(MetricPoint.trial_id == trial_id, MetricPoint.metric == metric)
        .subquery()
    )
    stride = (numbered.c.total + max_points - 1) // max_points
    return (
        select(numbered.c.step, numbered.c.value, numbered.c.wall_time)
        .where(or_(numbered.c.position % stride == 0, numbered.c.position == numbered.c.total))
        .order_by(numbered.c.step)
    )


# Reads of the store


def find_or_raise(connection: Connection, statement: Select, kind: str, key: str) -> Row:
    """The row `statement` selects; NotFound naming the `kind` and `key` looked up when there is none."""
    row = connection.execute(statement).one_or_none()
    if row is None:
        raise NotFound(kind, key)
    return row


def sweep_id(connection: Connection, name: str) -> int:
    return find_or_raise(connection, select(Sweep.id).where(Sweep.name == name), "sweep", name).id


def metrics_with_results(sweep_id: int, among: Collection[str] | None = None) -> Select:
    """The names of the metrics with a result in the sweep (only those `among`, when given)."""
    statement = (
        select(TrialSummary.metric).distinct().join(Trial, Trial.id == TrialSummary.trial_id)
        .where(Trial.sweep_id == sweep_id)
    )
    return statement if among is None else statement.where(TrialSummary.metric.in_(sorted(among)))


def check_metrics(connection: Connection, sweep_id: int, metrics: Collection[str]) -> None:
    """UnknownMetric for the first of `metrics` that the sweep neither declares nor has a result of."""
    if not metrics:
        return
    sweep = connection.execute(select(Sweep.name, Sweep.metric, Sweep.metric_modes).where(Sweep.id == sweep_id)).one()
    declared = {sweep.metric, *sweep.metric_modes}
    undeclared = set(metrics) - declared
    if not undeclared:
        return
    unknown = sorted(undeclared - set(connection.scalars(metrics_with_results(sweep_id, undeclared))))
    if unknown:
        known = declared | set(connection.scalars(metrics_with_results(sweep_id)))
        raise UnknownMetric(sweep.name, unknown[0], sorted(known))


def sweep_infos(connection: Connection, name: str | None) -> list[SweepInfo]:
    """The sweep named `name` (none when there is none), or with name None every sweep, with trial counts."""
    statement = select(Sweep.__table__).order_by(Sweep.id)
    counts_statement = select(Trial.sweep_id, Trial.status, func.count()).group_by(Trial.sweep_id, Trial.status)
    if name is not None:
        statement = statement.where(Sweep.name == name)
        counts_statement = counts_statement.join(Sweep, Sweep.id == Trial.sweep_id).where(Sweep.name == name)
    counts: dict[int, dict[TrialStatus, int]] = {}
    for of_sweep, status, count in connection.execute(counts_statement):
        counts.setdefault(of_sweep, {})[status] = count
    return [
        SweepInfo(
            id=row.id,
            name=row.name,
            task=row.task,
            metric=row.metric,
            mode=row.mode,
            metric_modes=row.metric_modes,
            spec_text=row.spec_text,
            spec_hash=row.spec_hash,
            status=row.status,
            code_version=row.code_version,
            created_at=utc(row.created_at),
            finished_at=utc(row.finished_at),
            trial_counts=dict(sorted(counts.get(row.id, {}).items())),
        )
        for row in connection.execute(statement)
    ]


def find_sweep(connection: Connection, name: str) -> SweepInfo:
    """The sweep named `name`; NotFound when there is none."""
    sweep_id(connection, name)
    return sweep_infos(connection, name)[0]


def find_trial(connection: Connection, trial_id: str) -> TrialInfo:
    """The trial, its sweep, and the summaries of the metrics its sweep declares that have a value."""
    trial = find_or_raise(
        connection,
        select(Trial.__table__, Sweep.name.label("sweep_name"), Sweep.metric.label("sweep_metric"), Sweep.metric_modes)
        .join(Sweep, Sweep.id == Trial.sweep_id)
        .where(Trial.id == trial_id),
        "trial",
        trial_id,
    )
    declared = sorted(trial.metric_modes.keys() | {trial.sweep_metric})
    rows = connection.execute(
        select(TrialSummary.metric, *(getattr(TrialSummary, column) for column in SUMMARY_STATS.values()))
        .where(TrialSummary.trial_id == trial_id, TrialSummary.metric.in_(declared))
        .order_by(TrialSummary.metric)
    )
    metrics = {
        row.metric: MetricSummary(*row[1:]) for row in rows if any(value is not None for value in row[1:])
    }
    columns = {field: getattr(trial, field) for field in TRIAL_FIELDS}
    columns.update({field: utc(columns[field]) for field in DATETIME_FIELDS})
    return TrialInfo(**columns, sweep=trial.sweep_name, sweep_metric=trial.sweep_metric, metrics=metrics)


def trial_page(
    connection: Connection,
    sweep: str,
    where: Mapping[str, Condition],
    sort: str,
    fields: list[str],
    limit: int | None,
    cursor: str | None,
) -> TrialPage:
    """One page of the sweep's trials (see ResultsStore.query_trials)."""
    of_sweep = sweep_id(connection, sweep)
    lateral = connection.dialect.name == "postgresql"
    statement, parsed_sort, metrics = build_trial_query(of_sweep, where, sort, fields, limit, cursor, lateral=lateral)
    check_metrics(connection, of_sweep, metrics)
    rows = connection.execute(statement).all()
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(parsed_sort, rows[-1]._sort_value, rows[-1]._trial_id)
    # Each row ends with the sort key columns, which zip() leaves out.
    page_rows = [dict(zip(fields, row)) for row in rows]
    for field in DATETIME_FIELDS.intersection(fields):
        for page_row in page_rows:
            page_row[field] = utc(page_row[field])
    return TrialPage(fields=fields, rows=page_rows, next_cursor=next_cursor)


def summary_rows(
    connection: Connection, sweep: str, metrics: Collection[str] = ()
) -> tuple[SweepInfo, Sequence[Row], Sequence[Row]]:
    """The sweep, its trials' TRIAL_FRAME_COLUMNS and their summaries, for resultsdb.frames.summary_frame;
    UnknownMetric when one of `metrics` is not the sweep's."""
    info = find_sweep(connection, sweep)
    check_metrics(connection, info.id, metrics)
    trials = connection.execute(
        select(*(getattr(Trial, column) for column in TRIAL_FRAME_COLUMNS))
        .where(Trial.sweep_id == info.id)
        .order_by(Trial.id)
    ).all()
    summaries = connection.execute(
        select(TrialSummary.trial_id, TrialSummary.metric, *(getattr(TrialSummary, c) for c in SUMMARY_STATS.values()))
        .join(Trial, Trial.id == TrialSummary.trial_id)
        .where(Trial.sweep_id == info.id)
    ).all()
    return info, trials, summaries


def trial_series(connection: Connection, trial_id: str, metric: str, max_points: int) -> Sequence[Row]:
    """The points of downsampled_series; NotFound for an unknown trial, UnknownMetric for a metric not its sweep's."""
    trial = find_or_raise(connection, select(Trial.sweep_id).where(Trial.id == trial_id), "trial", trial_id)
    check_metrics(connection, trial.sweep_id, [metric])
    return connection.execute(downsampled_series(trial_id, metric, max_points)).all()


def events_since(connection: Connection, after_id: int, sweep: str | None, limit: int,
                 kind: str | None = None) -> list[EventInfo]:
    statement = (
        select(Event.__table__, Sweep.name.label("sweep_name"))
        .outerjoin(Sweep, Sweep.id == Event.sweep_id)
        .where(Event.id > after_id)
        .order_by(Event.id)
        .limit(limit)
    )
    if sweep is not None:
        statement = statement.where(Event.sweep_id == sweep_id(connection, sweep))
    if kind is not None:
        statement = statement.where(Event.kind == kind)
    return [
        EventInfo(row.id, utc(row.created_at), row.kind, row.sweep_name, row.trial_id, row.payload)
        for row in connection.execute(statement)
    ]


def last_event_id(connection: Connection, sweep: str | None) -> int:
    statement = select(func.max(Event.id))
    if sweep is not None:
        statement = statement.where(Event.sweep_id == sweep_id(connection, sweep))
    return connection.execute(statement).scalar() or 0
