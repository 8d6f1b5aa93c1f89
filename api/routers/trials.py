"""Trials by id: detail with metric summaries, and a metric's downsampled history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import Store, require_reader
from api.errors import ERROR_RESPONSES
from api.routers.common import TrialId
from api.schemas import MetricName, SeriesOut, TrialOut

router = APIRouter(prefix="/trials", tags=["trials"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)


@router.get("/{trial_id}", response_model=TrialOut, summary="One trial: allocation, status, metric summaries")
def get_trial(trial_id: TrialId, store: Store) -> TrialOut:
    return TrialOut.model_validate(store.find_trial(trial_id))


@router.get("/{trial_id}/series", response_model=SeriesOut, summary="A metric's history, downsampled")
def get_series(
    trial_id: TrialId,
    store: Store,
    metric: Annotated[MetricName | None, Query(description="Default: the sweep's metric")] = None,
    max_points: Annotated[int, Query(ge=1, le=10_000, description="At most this many points; the last is kept")] = 1000,
) -> SeriesOut:
    trial = store.find_trial(trial_id)  # 404 for an unknown trial rather than an empty series
    chosen = metric or trial.sweep_metric
    return SeriesOut(trial_id=trial_id, metric=chosen, points=store.series(trial_id, chosen, max_points))
