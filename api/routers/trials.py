"""Trials by id: detail with metric summaries, and a metric's downsampled history."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import Store, require_reader
from api.errors import ERROR_RESPONSES
from api.routers.common import TrialId
from api.schemas import MetricName, SeriesOut, TrialOut
from resultsdb import NotFound, ResultsStore, SweepInfo
from resultsdb.queries import SUMMARY_STATS, TRIAL_FIELDS

router = APIRouter(prefix="/trials", tags=["trials"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)


def find_trial(store: ResultsStore, trial_id: str) -> tuple[SweepInfo, dict[str, Any]]:
    """The trial's sweep, and its columns with summaries of the metrics its sweep declares.

    The store looks trials up by sweep, so this asks each sweep in turn: one query per sweep, not per trial.
    """
    for sweep in store.list_sweeps():
        metrics = sorted(sweep.metric_modes.keys() | {sweep.metric})
        summary_fields = [f"{metric}.{stat}" for metric in metrics for stat in SUMMARY_STATS]
        page = store.query_trials(
            sweep.name, where={"id": {trial_id}}, fields=[*TRIAL_FIELDS, *summary_fields], limit=1
        )
        if page.rows:
            row = page.rows[0]
            summaries = {
                metric: {stat: row[f"{metric}.{stat}"] for stat in SUMMARY_STATS} for metric in metrics
            }
            reported = {metric: stats for metric, stats in summaries.items() if any(v is not None for v in stats.values())}
            trial = {field: row[field] for field in TRIAL_FIELDS}
            return sweep, {**trial, "sweep": sweep.name, "metrics": reported}
    raise NotFound(f"trial {trial_id!r} does not exist")


@router.get("/{trial_id}", response_model=TrialOut, summary="One trial: allocation, status, metric summaries")
def get_trial(trial_id: TrialId, store: Store) -> dict[str, Any]:
    return find_trial(store, trial_id)[1]


@router.get("/{trial_id}/series", response_model=SeriesOut, summary="A metric's history, downsampled")
def get_series(
    trial_id: TrialId,
    store: Store,
    metric: Annotated[MetricName | None, Query(description="Default: the sweep's metric")] = None,
    max_points: Annotated[int, Query(ge=1, le=10_000, description="At most this many points; the last is kept")] = 1000,
) -> SeriesOut:
    sweep, _ = find_trial(store, trial_id)  # 404 for an unknown trial rather than an empty series
    chosen = metric or sweep.metric
    points = store.series(trial_id, chosen, max_points)
    return SeriesOut(trial_id=trial_id, metric=chosen, points=[asdict(point) for point in points])
