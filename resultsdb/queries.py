"""Trial queries: filters, sorting, keyset cursors and projections (internal to resultsdb).

A field is a trial column (``TRIAL_FIELDS``) or ``"<metric>.<stat>"`` with a stat of
``SUMMARY_STATS``, read from the trial summary (e.g. ``"bpc.best"``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true
from sqlalchemy.orm import aliased

from resultsdb.models import ALLOCATION_COLUMNS, MetricPoint, Trial, TrialSummary

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


def utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every datetime leaving resultsdb is aware UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class TrialQuery:
    """Resolves field names to columns, joining one summary alias per metric used."""

    def __init__(self) -> None:
        self.summaries: dict[str, Any] = {}

    def column(self, field: str) -> ColumnElement[Any]:
        if field in TRIAL_FIELDS:
            return getattr(Trial, field)
        metric, _, stat = field.rpartition(".")
        if not metric or stat not in SUMMARY_STATS:
            raise ValueError(
                f"field {field!r}: expected a trial column ({', '.join(TRIAL_FIELDS)}) "
                f"or '<metric>.<stat>' with stat one of {', '.join(SUMMARY_STATS)}"
            )
        summary = self.summaries.setdefault(metric, aliased(TrialSummary, name=f"summary_{len(self.summaries)}"))
        return getattr(summary, SUMMARY_STATS[stat])

    def joined(self, statement: Select) -> Select:
        for metric, summary in self.summaries.items():
            statement = statement.outerjoin(
                summary, and_(summary.trial_id == Trial.id, summary.metric == metric)
            )
        return statement


def condition(column: ColumnElement[Any], field: str, wanted: Condition) -> ColumnElement[bool]:
    if isinstance(wanted, Range):
        bounds = []
        if wanted.low is not None:
            bounds.append(column >= wanted.low)
        if wanted.high is not None:
            bounds.append(column <= wanted.high)
        return and_(true(), *bounds)
    if isinstance(wanted, str | int | float):
        return column == wanted
    if isinstance(wanted, Collection):
        return column.in_(sorted(wanted, key=str)) if wanted else false()
    raise ValueError(f"filter {field!r}: expected a Range, a set of values or one value, got {wanted!r}")


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool

    @classmethod
    def parse(cls, sort: str) -> Sort:
        field = sort.removeprefix("-")
        if field in UNSORTABLE_FIELDS:
            raise ValueError(f"sort {sort!r}: {field} cannot be sorted on")
        return cls(field, sort.startswith("-"))

    def __str__(self) -> str:
        return f"-{self.field}" if self.descending else self.field


def encode_cursor(sort: Sort, value: Any, trial_id: str) -> str:
    if isinstance(value, datetime):
        value = {"datetime": value.isoformat()}
    payload = json.dumps([str(sort), value, trial_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, str]:
    try:
        issued_for, value, trial_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"cursor {cursor!r}: not a cursor returned by query_trials") from None
    if issued_for != str(sort):
        raise ValueError(f"cursor was issued for sort {issued_for!r}, not {str(sort)!r}")
    if isinstance(value, dict):
        value = datetime.fromisoformat(value["datetime"])
    return value, trial_id


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
    terms = [column.desc() if sort.descending else column.asc()]
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
    fields: Collection[str],
    limit: int | None,
    cursor: str | None,
) -> tuple[Select, list[str], Sort]:
    """The SELECT for one page; with a limit it selects one extra row to tell whether a next page exists."""
    query = TrialQuery()
    parsed_sort = Sort.parse(sort)
    field_list = list(dict.fromkeys(fields))
    selected = [query.column(field).label(field) for field in field_list]
    sort_column = query.column(parsed_sort.field)
    filters = [Trial.sweep_id == sweep_id]
    filters += [condition(query.column(field), field, wanted) for field, wanted in where.items()]
    if cursor is not None:
        value, trial_id = decode_cursor(cursor, parsed_sort)
        filters.append(after_cursor(sort_column, parsed_sort, value, trial_id))
    statement = select(*selected)
    if limit is not None:
        # The page's last row yields the next cursor.
        statement = statement.add_columns(sort_column.label("_sort_value"), Trial.id.label("_trial_id"))
        statement = statement.limit(limit + 1)
    statement = query.joined(statement.select_from(Trial)).where(*filters)
    statement = statement.order_by(*order_by(sort_column, parsed_sort))
    return statement, field_list, parsed_sort


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
