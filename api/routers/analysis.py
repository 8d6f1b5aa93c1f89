"""Analysis of a sweep's trial summaries: Pareto frontier, per-budget optimum, frontier scaling law."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query

from analysis import aggregate_seeds as seed_means
from analysis import fit_frontier_law, pareto_frontier, per_budget_optimum
from api.deps import Frames, require_reader
from api.errors import ERROR_RESPONSES
from api.frames import MetricFrame, SweepFrames
from api.routers.common import SweepName
from api.schemas import FitOut, FrontierOut, MetricName, OptimumOut
from resultsdb.frames import METRIC_COLUMN
from resultsdb.models import ALLOCATION_COLUMNS

router = APIRouter(prefix="/sweeps", tags=["analysis"], dependencies=[Depends(require_reader)], responses=ERROR_RESPONSES)

# An allocation is a trial's configuration apart from its seed.
ALLOCATION = [column for column in ALLOCATION_COLUMNS if column != "seed"]
Cost = Literal["params_total", "budget", "n_hidden", "k_e", "k_c", "d_m"]
MetricQuery = Annotated[MetricName | None, Query(description="A reported metric; default: the sweep's metric")]
AggregateSeeds = Annotated[bool, Query(description="Average over seeds (mean, std, count) per allocation")]


def _analysed(
    frames: SweepFrames, sweep: str, metric: str | None, name: Hashable, analyse: Callable[[pd.DataFrame, str, str], Any]
) -> Any:
    """analyse(trials, metric name, mode) on the sweep's trials (value in METRIC_COLUMN), kept until the sweep
    changes; 422 for a metric no trial reported."""

    def checked(frame: MetricFrame) -> Any:
        trials, metric_name, mode = frame
        if metric is not None and not {f"{metric}.final", f"{metric}.best"} & set(trials.columns):
            reported = sorted({column.rpartition(".")[0] for column in trials.columns if column.endswith(".best")})
            raise HTTPException(
                422, f"metric {metric!r} is not reported in sweep {sweep!r} (reported: {', '.join(reported) or 'none yet'})"
            )
        # Analyses copy the rows they keep: carrying only the columns they read keeps that cheap.
        return analyse(trials[["id", *ALLOCATION_COLUMNS, METRIC_COLUMN]], metric_name, mode)

    return frames.derived(sweep, metric, name, checked)


def _records(frame: pd.DataFrame, renames: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts with NaN as None, columns renamed."""
    frame = frame.rename(columns=renames or {})
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


VALUE_NAMES = {METRIC_COLUMN: "value", f"{METRIC_COLUMN}_std": "value_std"}


@router.get("/{name}/frontier", response_model=FrontierOut, summary="Pareto-optimal trials: best metric for no more cost")
def frontier(
    name: SweepName,
    frames: Frames,
    metric: MetricQuery = None,
    cost: Annotated[Cost, Query(description="The cost axis")] = "params_total",
    aggregate_seeds: AggregateSeeds = True,
) -> dict[str, Any]:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> dict[str, Any]:
        table = seed_means(trials, METRIC_COLUMN, ALLOCATION) if aggregate_seeds else trials
        return {
            "sweep": name, "metric": metric_name, "mode": mode, "cost": cost, "aggregate_seeds": aggregate_seeds,
            "points": _records(pareto_frontier(table, cost, METRIC_COLUMN, mode), VALUE_NAMES),
        }

    return _analysed(frames, name, metric, ("frontier", cost, aggregate_seeds), analyse)


@router.get("/{name}/optimum", response_model=OptimumOut, summary="Per budget: the best allocation and the runner-up")
def optimum(
    name: SweepName, frames: Frames, metric: MetricQuery = None, aggregate_seeds: AggregateSeeds = True
) -> dict[str, Any]:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> dict[str, Any]:
        answer = {"sweep": name, "metric": metric_name, "mode": mode, "aggregate_seeds": aggregate_seeds, "budgets": []}
        if trials[METRIC_COLUMN].notna().sum() == 0 or trials["budget"].notna().sum() == 0:
            return answer
        table = per_budget_optimum(trials, METRIC_COLUMN, mode, aggregate_seeds, config_columns=ALLOCATION)
        runner_up_columns = [f"runner_up_{column}" for column in [*ALLOCATION[1:], METRIC_COLUMN]]
        best_rows = _records(table.drop(columns=runner_up_columns), VALUE_NAMES)
        runner_up_rows = _records(
            table[["budget", *runner_up_columns]],
            {f"runner_up_{column}": column for column in ALLOCATION[1:]} | {f"runner_up_{METRIC_COLUMN}": "value"},
        )
        for best, runner_up in zip(best_rows, runner_up_rows, strict=True):
            answer["budgets"].append({
                "budget": best["budget"],
                "best": best,
                "runner_up": runner_up if runner_up["value"] is not None else None,
                "n_allocations": best["n_allocations"],
                "gap": best["gap"],
            })
        return answer

    return _analysed(frames, name, metric, ("optimum", aggregate_seeds), analyse)


@router.get(
    "/{name}/fit",
    response_model=FitOut,
    summary="Frontier scaling law metric = E ± A·cost^(−alpha) with bootstrap intervals",
    description="Fitted on the Pareto frontier (analysis.fit_frontier_law); 422 with the reason when it cannot be fitted.",
)
def fit(
    name: SweepName,
    frames: Frames,
    metric: MetricQuery = None,
    cost: Annotated[Cost, Query(description="The cost axis")] = "params_total",
    aggregate_seeds: AggregateSeeds = True,
    n_bootstrap: Annotated[int, Query(ge=20, le=1000, description="Bootstrap resamples for the intervals")] = 200,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="Random seed of starts and resamples")] = 0,
) -> dict[str, Any]:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> dict[str, Any]:
        # Name the value column after the metric so that a FitError's message names it too.
        value_column = metric_name if metric_name not in trials.columns else METRIC_COLUMN
        law = fit_frontier_law(
            trials.rename(columns={METRIC_COLUMN: value_column}), value_column, mode, cost,
            aggregate_seeds=aggregate_seeds, config_columns=ALLOCATION, n_bootstrap=n_bootstrap, seed=seed,
        ).to_dict()
        sign = "+" if mode == "min" else "−"
        return {**law, "sweep": name, "metric": metric_name, "law": f"{metric_name} = E {sign} A·{cost}^(−alpha)"}

    return _analysed(frames, name, metric, ("fit", cost, aggregate_seeds, n_bootstrap, seed), analyse)
