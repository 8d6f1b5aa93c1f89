"""Ingest results computed elsewhere (e.g. a published sweep): one row per trial, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Store, Writer
from api.errors import ERROR_RESPONSES, ErrorDetail, describe_validation_errors
from api.routers.common import SweepName
from api.schemas import PRINTABLE, IngestOut, IngestRequest, IngestRow
from resultsdb import ALLOCATION_COLUMNS, ConflictError, IngestedTrials, MetricMode, OverwriteRefused, ResultsStore

router = APIRouter(tags=["ingest"], responses=ERROR_RESPONSES)

MAX_BODY_BYTES = 32 * 2**20
ROW_FIELDS = frozenset(IngestRow.model_fields) - {"metrics"}
TEXT_COLUMNS = frozenset({"config", "status"})
CSV_MEDIA_TYPE = "text/csv"
JSON_MEDIA_TYPE = "application/json"
DESCRIPTION = f"""
Adds one trial per row and stores the row's metric values as the trial's final values. Requires a bearer token.

**Body**, by `Content-Type`:

* `{JSON_MEDIA_TYPE}`: `{{"rows": [{{"budget": 100000, "n_hidden": 96, "d_m": 5, ..., "seed": 0,
  "metrics": {{"accuracy": 0.91}}}}]}}` (schema IngestRequest).
* `{CSV_MEDIA_TYPE}`: a header row, then one row per trial. Columns named like the JSON fields
  ({", ".join(ALLOCATION_COLUMNS)}, optional `status` and `config` as JSON); every other column is a metric.
  Empty cells are missing values. Example: `curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: text/csv"
  --data-binary @results.csv .../sweeps/NAME/results?task=enwik8&metric=bpc&mode=min`.

**Idempotent**: a trial's id is derived from the sweep name, its `config` (default: its allocation columns) and
its seed, so sending the same rows again changes nothing, and a corrected value replaces the stored one. Two rows
of one trial in a request are refused. A row that would change a trial of a sweep run by `orchestrator submit` is
refused (409) unless the request has `overwrite=true`.

**All or nothing**: the rows are stored in one transaction, with one `trials_ingested` event naming the token
and the trials that changed; a request that fails stores nothing.

**The sweep** is created when it does not exist; then `task`, `metric` and `mode` are required and its spec text
records them (`source: ingest`). For an existing sweep they are optional and must match it (409 otherwise).
Once none of its trials is pending or running, the sweep is `completed`, or `failed` when no trial succeeded.
Errors name the row as `rows.<index from 0>.<field>`.
"""


def _request_body_schema() -> dict[str, Any]:
    json_schema = IngestRequest.model_json_schema()
    json_schema["properties"]["rows"]["items"] = json_schema.pop("$defs")["IngestRow"]
    return {
        "required": True,
        "content": {JSON_MEDIA_TYPE: {"schema": json_schema}, CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
    }


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body is larger than {MAX_BODY_BYTES // 2**20} MiB; send fewer rows")
        chunks.append(chunk)
    return b"".join(chunks)


def _csv_rows(body: bytes) -> list[dict[str, Any]]:
    """CSV cells as JSON-like rows: allocation fields as they are, every other column under `metrics`."""
    try:
        reader = csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""))
        header, *lines = list(reader)
    except UnicodeDecodeError as error:
        raise HTTPException(422, f"CSV body is not UTF-8 ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise HTTPException(422, f"CSV body is malformed: {error}") from None
    except ValueError:
        raise HTTPException(422, "CSV body is empty: expected a header row and one row per trial") from None
    header = [column.strip() for column in header]
    if len(set(header)) != len(header) or "" in header:
        raise HTTPException(422, f"CSV header {header!r}: column names must be distinct and not empty")
    rows = []
    for index, cells in enumerate(line for line in lines if any(cell.strip() for cell in line)):
        if len(cells) != len(header):
            raise HTTPException(422, f"rows.{index}: {len(cells)} cells, but the header names {len(header)} columns")
        row: dict[str, Any] = {"metrics": {}}
        for column, cell in zip(header, cells):
            cell = cell.strip()
            if "_" in cell and column not in TEXT_COLUMNS:  # Python's int() and float() read 1_000 as 1000
                raise HTTPException(422, f"rows.{index}.{column}: {cell!r} is not a number (no '_' in numbers)")
            target = row if column in ROW_FIELDS else row["metrics"]
            target[column] = cell or None
        if row.get("config") is not None:
            try:
                row["config"] = json.loads(row["config"])
            except ValueError:
                raise HTTPException(422, f"rows.{index}.config: not valid JSON") from None
        rows.append({field: value for field, value in row.items() if value is not None})
    return rows


def _parse_rows(body: bytes, content_type: str) -> list[IngestRow]:
    try:
        if content_type == JSON_MEDIA_TYPE:
            return IngestRequest.model_validate_json(body).rows
        if content_type == CSV_MEDIA_TYPE:
            return IngestRequest.model_validate({"rows": _csv_rows(body)}).rows
    except ValidationError as error:
        raise HTTPException(422, describe_validation_errors(error.errors())) from None
    raise HTTPException(415, f"Content-Type {content_type!r}: send {JSON_MEDIA_TYPE} or {CSV_MEDIA_TYPE}")


def _sweep_to_create(store: ResultsStore, name: str, declared: dict[str, str | None]) -> dict[str, str] | None:
    """The declared task, metric and mode of a sweep to create, or None after checking them against the existing one."""
    existing = store.get_sweep(name)
    if existing is not None:
        for field, value in declared.items():
            if value is not None and value != getattr(existing, field):
                raise ConflictError(f"sweep {name!r} has {field} {getattr(existing, field)!r}, not {value!r}")
        return None
    missing = [field for field, value in declared.items() if value is None]
    if missing:
        raise HTTPException(422, f"sweep {name!r} does not exist; to create it, give query parameter(s) "
                                 f"{', '.join(missing)}")
    return {field: str(value) for field, value in declared.items()}


def _store_rows(store: ResultsStore, name: str, rows: list[IngestRow], writer: str, overwrite: bool,
                declared: dict[str, str | None], metric_modes: dict[str, str]) -> IngestedTrials:
    trials = []
    for row in rows:
        allocation = row.model_dump(include=set(ALLOCATION_COLUMNS))
        config = row.config if row.config is not None else {k: v for k, v in allocation.items() if k != "seed"}
        final = {metric: value for metric, value in row.metrics.items() if value is not None}
        trials.append({**allocation, "config": config, "status": row.status, "final": final})
    try:
        return store.ingest_trials(name, trials, writer=writer, overwrite=overwrite, metric_modes=metric_modes,
                                   declared=_sweep_to_create(store, name, declared))
    except OverwriteRefused as error:
        raise HTTPException(409, f"{error}; to replace it, send the request with overwrite=true") from None
    except ConflictError:
        raise
    except ValueError as error:  # two rows of one trial
        raise HTTPException(422, f"rows (counting from 0): {error}") from None


def _metric_modes(text: str | None) -> dict[str, str]:
    modes = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        metric, _, mode = item.partition(":")
        if mode not in set(MetricMode) or not metric:
            raise HTTPException(422, f"metric_modes item {item!r}: expected <metric>:min or <metric>:max")
        modes[metric] = mode
    return modes


@router.post(
    "/sweeps/{name}/results",
    response_model=IngestOut,
    summary="Ingest results computed elsewhere (JSON rows or CSV); idempotent; bearer token required",
    description=DESCRIPTION,
    openapi_extra={"requestBody": _request_body_schema()},
    responses={413: {"model": ErrorDetail, "description": "Body too large"},
               415: {"model": ErrorDetail, "description": "Body neither JSON nor CSV"}},
)
async def ingest(
    name: SweepName,
    request: Request,
    store: Store,
    writer: Writer,
    task: Annotated[str | None, Query(min_length=1, max_length=100, pattern=PRINTABLE,
                                      description="Task of a new sweep")] = None,
    metric: Annotated[str | None, Query(min_length=1, max_length=100, pattern=PRINTABLE,
                                        description="Metric of a new sweep")] = None,
    mode: Annotated[MetricMode | None, Query(description="Whether lower or higher `metric` is better")] = None,
    metric_modes: Annotated[str | None, Query(max_length=2000,
                                              description="Other metrics' modes: `accuracy:max,loss:min`")] = None,
    overwrite: Annotated[bool, Query(description="Allow rows to change trials of a sweep run by the orchestrator")]
    = False,
) -> IngestOut:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    rows = _parse_rows(await _read_body(request), content_type)
    declared: dict[str, str | None] = {"task": task, "metric": metric, "mode": mode}
    ingested = await run_in_threadpool(_store_rows, store, name, rows, writer, overwrite, declared,
                                       _metric_modes(metric_modes))
    return IngestOut(sweep=name, created_sweep=ingested.created_sweep, trials=len(ingested.trial_ids),
                     trial_ids=ingested.trial_ids, overwritten=ingested.overwritten)
