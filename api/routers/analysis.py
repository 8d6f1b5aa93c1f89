"""Analysis of a sweep's trial summaries: the frontier, each budget's optimum, and every law fitted to them."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Query
from fastapi import Path as FastApiPath

from analysis import FitError, locate_optima, pareto_frontier, per_budget_optimum
from analysis import frontier as frontier_rows
from analysis.fitting import finite_rows
from analysis.laws import LAWS, fit_laws
from api.deps import Frames, require_reader
from api.errors import ERROR_RESPONSES
from api.frames import SweepFrames
from api.routers.common import SweepName
from api.schemas import FrontierKind, FrontierOut, LawName, LawOut, LawsOut, MetricName, OptimumOut, PositiveBudget
from resultsdb import ALLOCATION_COLUMNS, CONFIG_COLUMNS, METRIC_COLUMN, MetricFrame

router = APIRouter(prefix="/sweeps", tags=["analysis"], dependencies=[Depends(require_reader)],
                   responses=ERROR_RESPONSES)

ALLOCATION = list(CONFIG_COLUMNS)  # what tells allocations apart: every allocation column but the seed
Cost = Literal["params_total", "budget", "n_hidden", "k_e", "k_c", "d_m"]
MetricQuery = Annotated[MetricName | None, Query(description="A reported metric; default: the sweep's metric")]
AggregateSeeds = Annotated[bool, Query(description="Average over seeds (mean, std, count) per allocation")]


def _analysed(
    frames: SweepFrames, sweep: str, metric: str | None, name: Hashable,
    analyse: Callable[[pd.DataFrame, str, str], Any]
) -> Any:
    """analyse(trials, metric name, mode) on the sweep's trials (value in METRIC_COLUMN), kept until the sweep
    changes; the store's UnknownMetric (422) for a metric that is not the sweep's."""

    def on_read_columns(frame: MetricFrame) -> Any:
        trials, metric_name, mode = frame
        # Analyses copy the rows they keep: carrying only the columns they read keeps that cheap.
        return analyse(trials[["id", *ALLOCATION_COLUMNS, METRIC_COLUMN]], metric_name, mode)

    return frames.derived(sweep, metric, name, on_read_columns)


def _records(frame: pd.DataFrame, renames: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts with NaN as None, columns renamed."""
    frame = frame.rename(columns=renames or {})
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


VALUE_NAMES = {METRIC_COLUMN: "value", f"{METRIC_COLUMN}_std": "value_std"}


FrontierQuery = Annotated[
    FrontierKind, Query(description="per_budget: each budget's best allocation; pareto: strict Pareto set over the "
                                    "cost; auto: per_budget for a fixed-budget sweep, else pareto")
]
BootstrapQuery = Annotated[int, Query(ge=20, le=1000, description="Bootstrap resamples for the intervals")]
SeedQuery = Annotated[int, Query(ge=0, le=2**31 - 1, description="Random seed of starts and resamples")]


@router.get("/{name}/frontier", response_model=FrontierOut, summary="The frontier: best metric for no more cost")
def frontier(
    name: SweepName,
    frames: Frames,
    metric: MetricQuery = None,
    kind: FrontierQuery = "auto",
    cost: Annotated[Cost, Query(description="The cost axis of a Pareto frontier")] = "params_total",
    aggregate_seeds: AggregateSeeds = True,
) -> FrontierOut:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> FrontierOut:
        answer = {"sweep": name, "metric": metric_name, "mode": mode, "kind": "pareto", "cost": cost,
                  "aggregate_seeds": aggregate_seeds, "points": []}
        rows = finite_rows(trials, [METRIC_COLUMN])
        if rows.empty:
            return FrontierOut(**answer)
        if not aggregate_seeds:
            points = pareto_frontier(rows, cost, METRIC_COLUMN, mode)
        else:
            answer["kind"], points = frontier_rows(rows, METRIC_COLUMN, mode, kind, cost, ALLOCATION)
        if answer["kind"] == "per_budget":
            answer["cost"] = "budget"
        return FrontierOut(**answer | {"points": _records(points, VALUE_NAMES)})

    return _analysed(frames, name, metric, ("frontier", kind, cost, aggregate_seeds), analyse)


@router.get("/{name}/optimum", response_model=OptimumOut,
            summary="Per budget: the best allocation, the runner-up, and the optimum located between grid points")
def optimum(
    name: SweepName, frames: Frames, metric: MetricQuery = None, aggregate_seeds: AggregateSeeds = True,
    n_bootstrap: BootstrapQuery = 200, seed: SeedQuery = 0,
) -> OptimumOut:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> OptimumOut:
        answer = {"sweep": name, "metric": metric_name, "mode": mode, "aggregate_seeds": aggregate_seeds, "budgets": []}
        if trials[METRIC_COLUMN].notna().sum() == 0 or trials["budget"].notna().sum() == 0:
            return OptimumOut(**answer)
        table = per_budget_optimum(trials, METRIC_COLUMN, mode, aggregate_seeds, config_columns=ALLOCATION)
        located = {o.budget: o.to_dict() for o in locate_optima(
            trials, METRIC_COLUMN, mode, config_columns=ALLOCATION, n_bootstrap=n_bootstrap, seed=seed).optima}
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
                "located": located.get(float(best["budget"])),
                "n_allocations": best["n_allocations"],
                "gap": best["gap"],
            })
        return OptimumOut(**answer)

    return _analysed(frames, name, metric, ("optimum", aggregate_seeds, n_bootstrap, seed), analyse)


def _law_reports(trials: pd.DataFrame, metric_name: str, mode: str, laws: tuple[str, ...], **options):
    return fit_laws(trials, METRIC_COLUMN, mode, laws, metric_name=metric_name, config_columns=ALLOCATION, **options)


@router.get("/{name}/laws", response_model=LawsOut,
            summary="Every law: frontier, allocation N*/k_e*/d_m*(P), surface, tradeoff model; "
                    "and why any cannot be fitted")
def laws(
    name: SweepName, frames: Frames, metric: MetricQuery = None,
    budget: Annotated[PositiveBudget | None, Query(description="Also predict the optimum at this budget")] = None,
    frontier: FrontierQuery = "auto", n_bootstrap: BootstrapQuery = 200, seed: SeedQuery = 0,
) -> LawsOut:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> LawsOut:
        reports, refused = _law_reports(trials, metric_name, mode, LAWS, budget=budget, frontier=frontier,
                                        n_bootstrap=n_bootstrap, seed=seed)
        return LawsOut(sweep=name, metric=metric_name, mode=mode,
                       laws=[_law_out(name, report) for report in reports], refused=refused)

    return _analysed(frames, name, metric, ("laws", budget, frontier, n_bootstrap, seed), analyse)


@router.get(
    "/{name}/laws/{law}",
    response_model=LawOut,
    summary="One law with 95 % bootstrap intervals, fit quality, curves to draw and the data snapshot hash",
    description="422 with the reason in plain words when the data cannot determine it.",
)
def law(
    name: SweepName, law: Annotated[LawName, FastApiPath(description="Which law")], frames: Frames,
    metric: MetricQuery = None,
    budget: Annotated[PositiveBudget | None, Query(description="Also predict the optimum at this budget")] = None,
    frontier: FrontierQuery = "auto", n_bootstrap: BootstrapQuery = 200, seed: SeedQuery = 0,
) -> LawOut:
    def analyse(trials: pd.DataFrame, metric_name: str, mode: str) -> LawOut:
        reports, refused = _law_reports(trials, metric_name, mode, (law,), budget=budget, frontier=frontier,
                                        n_bootstrap=n_bootstrap, seed=seed)
        if refused:
            raise FitError(refused[law])
        return _law_out(name, reports[0])

    return _analysed(frames, name, metric, ("law", law, budget, frontier, n_bootstrap, seed), analyse)


def _law_out(sweep: str, report) -> LawOut:
    return LawOut(**{"sweep": sweep, **report.to_dict()})
