"""Query-string filters of the trials endpoint: `?d_m=2,4,8&budget=1e5..1e6&status=completed&bpc.best=..1.5`.

A filter the parser refuses raises resultsdb's InvalidQuery, as the store does for a field it does not know;
api/errors.py answers both with 422.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from resultsdb import ALLOCATION_COLUMNS, SUMMARY_STATS, InvalidQuery, Range, TrialStatus

FLOAT_COLUMNS = frozenset({"rho_rec"})
SWEEP_METRIC_ALIAS = "metric"
# Per request: each metric field is one more column of the pivot over the summaries that the query reads.
MAX_METRIC_FILTERS = 20
MAX_METRIC_FIELDS = 50
# A query reading more distinct metric fields than this waits for a heavy-read slot (ApiSettings.heavy_reads).
HEAVY_METRIC_FIELDS = 8
FILTER_SYNTAX = f"""
**Filters**: one query parameter per field; each value is one of

* `a..b` an inclusive range; either side may be left open: `budget=1e5..1e6`, `metric.best=..1.5`, `k_e=100..`
* `a,b,c` a set of values: `d_m=2,4,8`, `status=completed,failed`
* `a` a single value: `seed=0`

Fields: the allocation columns ({", ".join(ALLOCATION_COLUMNS)}), `status`
({", ".join(TrialStatus)}), and summary statistics `<metric>.<stat>` with stat one of
{", ".join(SUMMARY_STATS)}, e.g. `bpc.best`; `metric.<stat>` stands for the sweep's own metric. A metric the
sweep neither declares nor has a result of is refused (422, listing the sweep's metrics), in `fields` and `sort` too.
Numbers may be written as `1e5`; an integer no trial can hold (beyond the column's range) matches nothing.
Filters combine with AND. A parameter the endpoint does not know is refused (422), and so are more than
{MAX_METRIC_FILTERS} `<metric>.<stat>` filters in one request.
"""


def resolve_field(field: str, sweep_metric: str) -> str:
    """`metric.<stat>` names the sweep's metric; other fields are returned as they are."""
    prefix = SWEEP_METRIC_ALIAS + "."
    return sweep_metric + field[len(prefix) - 1 :] if field.startswith(prefix) else field


def is_metric_field(field: str) -> bool:
    metric, _, stat = field.rpartition(".")
    return bool(metric) and stat in SUMMARY_STATS


def is_filter_field(field: str) -> bool:
    return field in ALLOCATION_COLUMNS or field == "status" or is_metric_field(field)


def is_heavy(fields: Iterable[str]) -> bool:
    """Whether a query over `fields` (its columns, filters and sort together) reads many metric fields."""
    return len({field for field in fields if is_metric_field(field)}) > HEAVY_METRIC_FIELDS


def check_metric_fields(fields: Iterable[str]) -> None:
    """InvalidQuery when `fields` name more than MAX_METRIC_FIELDS distinct `<metric>.<stat>` columns."""
    count = len({field for field in fields if is_metric_field(field)})
    if count > MAX_METRIC_FIELDS:
        raise InvalidQuery(
            f"fields: at most {MAX_METRIC_FIELDS} metric fields (<metric>.<stat>) per request, got {count}"
        )


def _number(field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidQuery(f"filter {field}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidQuery(f"filter {field}: {text!r} is not a finite number")
    return value


def _value(field: str, text: str) -> Any:
    if field == "status":
        if text not in set(TrialStatus):
            raise InvalidQuery(f"filter status: {text!r} is not one of {', '.join(TrialStatus)}")
        return TrialStatus(text)
    value = _number(field, text)
    if field in ALLOCATION_COLUMNS and field not in FLOAT_COLUMNS:
        if not value.is_integer():
            raise InvalidQuery(f"filter {field}: {text!r} is not an integer")
        return int(value)
    return value


def parse_condition(field: str, text: str) -> Range | set[Any] | Any:
    """One filter value in the syntax of FILTER_SYNTAX."""
    text = text.strip()
    if ".." in text:
        if field == "status":
            raise InvalidQuery("filter status: ranges apply to numeric fields only")
        low, _, high = (part.strip() for part in text.partition(".."))
        if not low and not high:
            raise InvalidQuery(f"filter {field}: range {text!r} has no bound")
        return Range(_number(field, low) if low else None, _number(field, high) if high else None)
    if "," in text:
        return {_value(field, part.strip()) for part in text.split(",")}
    return _value(field, text)


def parse_filters(params: Iterable[tuple[str, str]], reserved: set[str], sweep_metric: str) -> dict[str, Any]:
    """The `where` mapping for ResultsStore.query_trials from the query parameters not in `reserved`."""
    where: dict[str, Any] = {}
    for field, text in params:
        if field in reserved:
            continue
        if not is_filter_field(field):
            raise InvalidQuery(
                f"unknown query parameter {field!r}: not a filter field (allocation column, status, <metric>.<stat>)"
            )
        resolved = resolve_field(field, sweep_metric)
        if resolved in where:
            raise InvalidQuery(f"filter {field} is given twice; use a set (a,b) or a range (a..b)")
        where[resolved] = parse_condition(field, text)
    metric_filters = sum(is_metric_field(field) for field in where)
    if metric_filters > MAX_METRIC_FILTERS:
        raise InvalidQuery(
            f"at most {MAX_METRIC_FILTERS} metric filters (<metric>.<stat>) per request, got {metric_filters}"
        )
    return where


def documented_filter_parameters() -> list[dict[str, Any]]:
    """OpenAPI entries for the fixed filter fields (the parser reads them from the raw query string)."""
    fields = [*ALLOCATION_COLUMNS, "status", *(f"{SWEEP_METRIC_ALIAS}.{stat}" for stat in SUMMARY_STATS)]
    return [
        {
            "name": field,
            "in": "query",
            "required": False,
            "description": f"Filter on {field}: `a..b`, `a,b,c` or `a` (see the endpoint description)",
            "schema": {"type": "string"},
        }
        for field in fields
    ]
