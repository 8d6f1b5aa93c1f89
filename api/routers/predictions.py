"""Recorded predictions: make one from a sweep (the optimum at a new budget, with intervals) and list them, scored
against the trials that have since finished at their budgets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from analysis import next_budget, predict_optimum, score_prediction
from api.deps import Frames, Store, require_reader, require_writer
from api.errors import ERROR_RESPONSES
from api.routers.analysis import ALLOCATION
from api.routers.common import SweepName
from api.schemas import PRINTABLE, PredictionRecordOut, PredictionRequest
from resultsdb import METRIC_COLUMN

router = APIRouter(tags=["predictions"], responses=ERROR_RESPONSES)


@router.post(
    "/sweeps/{name}/predictions",
    response_model=PredictionRecordOut,
    status_code=201,
    dependencies=[Depends(require_writer)],
    summary="Record the optimum a law predicts at a new budget (201), or the same prediction already recorded from "
            "the same data (200); bearer token required",
    description="Fitted on the sweep's trials below the budget; 422 with the reason when no law can predict there. "
                "It is scored once trials at the budget finish in a sweep of the same task and settings "
                "(GET /predictions).",
    responses={200: {"model": PredictionRecordOut, "description": "Recorded before from the same data"}},
)
def create_prediction(name: SweepName, store: Store, frames: Frames, response: Response,
                      body: PredictionRequest | None = None) -> PredictionRecordOut:
    request = body or PredictionRequest()
    trials, metric, mode = frames.metric_frame(name)
    budget = next_budget(trials, request.budget)
    prediction = predict_optimum(trials, METRIC_COLUMN, mode, budget, request.law, config_columns=ALLOCATION,
                                 n_bootstrap=request.n_bootstrap)
    recorded, created = store.create_prediction(name, prediction.to_dict(), metric=metric)
    if not created:
        response.status_code = 200
    return PredictionRecordOut.model_validate(recorded)


@router.get(
    "/predictions",
    response_model=list[PredictionRecordOut],
    dependencies=[Depends(require_reader)],
    summary="Recorded predictions, oldest first, each scored once the trials at its budget have finished",
)
def list_predictions(
    store: Store,
    sweep: Annotated[str | None, Query(min_length=1, max_length=200, pattern=PRINTABLE,
                                       description="Only those made from this sweep or scored against its trials")]
    = None,
) -> list[PredictionRecordOut]:
    return [PredictionRecordOut.model_validate(p) for p in store.score_predictions(score_prediction, sweep)]
