"""Sweeps: list, detail, and the sweep's trials (filtered, sorted, paginated, projected)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.deps import Frames, HeavyReadsDep, Store, SweepDep, require_reader
from api.errors import ERROR_RESPONSES
from api.filters import (
    FILTER_SYNTAX,
    HEAVY_METRIC_FIELDS,
    MAX_METRIC_FIELDS,
    check_metric_fields,
    documented_filter_parameters,
    is_heavy,
    parse_filters,
    resolve_field,
)
from api.frames import SweepFrames
from api.schemas import SweepDetail, SweepOut, TrialPageOut
from api.settings import ApiSettings
from resultsdb import FINISHED_TRIAL_STATUSES, METRIC_COLUMN, InvalidQuery, MetricMode, SweepInfo

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)

MAX_PAGE_SIZE = 1000
PAGE_PARAMETERS = {"sort", "fields", "limit", "cursor"}


def _overview(sweep: SweepInfo, frames: SweepFrames, schema: type[SweepOut] = SweepOut) -> SweepOut:
    trials, _, mode = frames.metric_frame(sweep.name)
    values = trials[METRIC_COLUMN].dropna()
    best = None if values.empty else float(values.min() if mode == MetricMode.MIN else values.max())
    total = sum(sweep.trial_counts.values())
    finished = sum(count for status, count in sweep.trial_counts.items() if status in FINISHED_TRIAL_STATUSES)
    return schema(
        **asdict(sweep),
        trials_total=total,
        progress=finished / total if total else 0.0,
        best=best,
        budgets=sorted(int(budget) for budget in trials["budget"].dropna().unique()),
    )


@router.get("", response_model=list[SweepOut], summary="All sweeps with trial counts, best metric and budgets")
def list_sweeps(store: Store, frames: Frames) -> list[SweepOut]:
    return [_overview(sweep, frames) for sweep in store.list_sweeps()]


@router.get("/{name}", response_model=SweepDetail, summary="One sweep: spec, status, progress")
def get_sweep(sweep: SweepDep, frames: Frames) -> SweepDetail:
    return _overview(sweep, frames, SweepDetail)


@router.get(
    "/{name}/trials",
    response_model=TrialPageOut,
    summary="The sweep's trials: filters, sort, cursor pagination, column projection",
    description=FILTER_SYNTAX
    + f"""
**Sort**: `sort=<field>` ascending or `sort=-<field>` descending (NULLs last, ties by id), any field above or a
trial column such as `created_at`.

**Pages**: at most `limit` rows (1 to 1000); pass the returned `next_cursor` as `cursor` with the same sort and
filters for the next page.

**Columns**: `fields=id,d_m,bpc.best` (default: id, status and the allocation columns; also attempts, error, node,
device, created_at, started_at, ended_at, status_at, config), with at most {MAX_METRIC_FIELDS} `<metric>.<stat>`
columns.

**Time**: a query that runs past the server's statement timeout (Postgres; {ApiSettings.read_timeout_s:g} s by default)
is answered 503. A query reading more than {HEAVY_METRIC_FIELDS} metric fields (columns, filters and sort together)
runs when one of the server's {ApiSettings.heavy_reads} heavy-read slots is free, and is answered 503 with
Retry-After after {ApiSettings.heavy_read_wait_s:g} s without one: the other requests keep their connections.
""",
    openapi_extra={"parameters": documented_filter_parameters()},
)
def list_trials(
    sweep: SweepDep,
    request: Request,
    store: Store,
    heavy_reads: HeavyReadsDep,
    sort: Annotated[str, Query(max_length=200, description="Field to sort by; prefix - for descending")] = "id",
    fields: Annotated[str | None, Query(max_length=2000, description="Comma-separated columns to return")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = 100,
    cursor: Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")] = None,
) -> TrialPageOut:
    where = parse_filters(request.query_params.multi_items(), PAGE_PARAMETERS, sweep.metric)
    field_list = None
    if fields is not None:
        field_list = [resolve_field(field.strip(), sweep.metric) for field in fields.split(",") if field.strip()]
        if not field_list:
            raise InvalidQuery("fields: name at least one column")
        check_metric_fields(field_list)
    sort_field = resolve_field(sort.removeprefix("-"), sweep.metric)
    heavy = is_heavy([*where, *(field_list or []), sort_field])
    with heavy_reads.slot() if heavy else nullcontext():
        page = store.query_trials(
            sweep.name,
            where=where,
            sort=("-" if sort.startswith("-") else "") + sort_field,
            fields=field_list,
            limit=limit,
            cursor=cursor,
        )
    return TrialPageOut(sweep=sweep.name, fields=page.fields, rows=page.rows, next_cursor=page.next_cursor)
