"""Predictions to record, and their scores: the optimum at a budget beyond the data, then how it compares with
the trials run there.

`predict_optimum` fits a law to the trials at budgets below the one it predicts, so a prediction never sees the
trials that score it, and gives the optimal allocation (d_m, N, k_e) and the metric there, each with its 95 %
interval. `score_prediction` locates the observed optimum among the finished trials at that budget
(analysis.optimum) and compares: whether it lies inside the predicted intervals, the metric's error, and the regret
of the predicted allocation (how much worse the observed allocation nearest the predicted d_m is than the best).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from analysis.fitting import Estimate, FitError, JsonResult, check_mode, finite_rows, snapshot_hash
from analysis.frontier import aggregate_seeds, config_columns_of, metric_key
from analysis.laws import fit_laws
from analysis.optimum import locate_optima

# "auto" takes the first that predicts the whole optimum; the allocation laws take the metric from the frontier law.
PREDICTING_LAWS = ("allocation", "surface", "tradeoff")
PREDICTED_VALUES = ("d_m", "n_hidden", "k_e", "metric")
MIN_OBSERVED_ALLOCATIONS = 3  # fewer locate no optimum (analysis.optimum)
SCORE_BOOTSTRAP = 1000


@dataclass
class BudgetPrediction(JsonResult):
    """The optimum a law predicts at `budget`, fitted on the trials at `budgets` (all below it)."""

    budget: float
    law: str  # "allocation+frontier", "surface" or "tradeoff"
    d_m: Estimate
    n_hidden: Estimate
    k_e: Estimate
    metric: Estimate
    snapshot_hash: str  # of the trials fitted on: ids, allocations, metric values
    n_trials: int
    budgets: list[float]
    n_bootstrap: int


def predict_optimum(trials: pd.DataFrame, metric: str, mode: str, budget: float, law: str = "auto",
                    config_columns: Sequence[str] | None = None, n_bootstrap: int = 200,
                    seed: int = 0) -> BudgetPrediction:
    """The optimum at `budget` by `law` (one of PREDICTING_LAWS, or "auto": the first of them that predicts it),
    fitted on the trials at lower budgets; FitError saying why when no law can."""
    check_mode(mode)
    if law != "auto" and law not in PREDICTING_LAWS:
        raise FitError(f"law must be auto or one of {', '.join(PREDICTING_LAWS)}, got {law!r}")
    if not (np.isfinite(budget) and budget > 0):
        raise FitError(f"budget must be a positive number, got {budget!r}")
    rows = finite_rows(trials, ["budget", metric])
    below = rows[rows["budget"] < budget]
    if below.empty:
        raise FitError(f"no trial below budget {budget:g} has a finite {metric!r}: nothing to predict from")
    refusals = []
    for candidate in PREDICTING_LAWS if law == "auto" else (law,):
        try:
            name, estimates = _predicted_by(below, candidate, metric, mode, budget, config_columns, n_bootstrap, seed)
        except FitError as error:
            refusals.append(f"{candidate}: {error}")
            continue
        columns = ["id", "trial_id", metric, *config_columns_of(below, config_columns), "seed"]
        return BudgetPrediction(budget=float(budget), law=name, **estimates,
                                snapshot_hash=snapshot_hash(below, columns), n_trials=len(below),
                                budgets=sorted(float(b) for b in below["budget"].unique()), n_bootstrap=n_bootstrap)
    raise FitError(f"no law predicts the optimum at budget {budget:g} ({'; '.join(refusals)})")


def _predicted_by(trials, law, metric, mode, budget, config_columns, n_bootstrap, seed) -> tuple[str, dict]:
    """(the laws' name, {d_m, n_hidden, k_e, metric: Estimate}) of `law`'s prediction at `budget`."""
    laws = ("allocation", "frontier") if law == "allocation" else (law,)
    reports, refused = fit_laws(trials, metric, mode, laws, budget=budget, config_columns=config_columns,
                                n_bootstrap=n_bootstrap, seed=seed)
    if refused:
        raise FitError("; ".join(refused.values()))
    predictions = [report.prediction for report in reports if report.prediction is not None]
    if any(prediction.interior is False for prediction in predictions):
        raise FitError(f"its optimum at budget {budget:g} is at the end of the range it searched")
    estimates = {}
    for value in PREDICTED_VALUES:
        estimate = next(getattr(p, value) for p in predictions if getattr(p, value) is not None)
        if not np.isfinite([estimate.value, estimate.ci_low, estimate.ci_high]).all():
            raise FitError(f"its {value} at budget {budget:g} has no finite interval")
        estimates[value] = estimate
    return "+".join(laws), estimates


class Interval(Protocol):
    """A value with its 95 % interval, as an Estimate (or the results store's record of one) holds it."""

    value: float
    ci_low: float
    ci_high: float


@dataclass
class ObservedOptimum(JsonResult):
    """The optimum among the trials at a prediction's budget (an edge optimum's interval is open on that side)."""

    d_m: Estimate
    n_hidden: float | None
    k_e: float | None
    metric: Estimate
    method: str  # "parabola" or "grid" (analysis.optimum.LocatedOptimum)
    edge: str | None
    best_d_m: float  # the best allocation's d_m (seeds averaged)
    best_metric: float
    nearest_d_m: float  # the allocation nearest the predicted d_m (in log d_m)
    nearest_metric: float
    n_allocations: int
    n_trials: int


@dataclass
class PredictionScore(JsonResult):
    """How a prediction compares with the optimum observed at its budget."""

    observed: ObservedOptimum
    d_m_inside: bool  # the observed optimum's d_m lies in the predicted interval
    metric_inside: bool
    metric_error: float  # predicted minus observed metric at the optimum
    regret: float  # how much worse the allocation nearest the predicted d_m is than the best one (>= 0)


def score_prediction(mode: str, d_m: Interval, metric: Interval, observed: pd.DataFrame,
                     metric_column: str = "metric", config_columns: Sequence[str] | None = None,
                     n_bootstrap: int = SCORE_BOOTSTRAP) -> dict[str, Any] | None:
    """The score (PredictionScore as JSON, what ResultsStore.score_predictions records) of a prediction of `d_m`
    and `metric` against the finished trials of one budget; None with fewer than MIN_OBSERVED_ALLOCATIONS d_m
    values. Deterministic: the same trials give the same score."""
    rows = finite_rows(observed, ["d_m", metric_column])
    rows = rows[rows["d_m"] > 0]  # the optimum is located in log(d_m)
    if rows["d_m"].nunique() < MIN_OBSERVED_ALLOCATIONS:
        return None
    if rows["budget"].nunique() != 1:
        raise FitError(f"a prediction is scored against the trials of one budget, got {rows['budget'].nunique()}")
    (located,) = locate_optima(rows, metric_column, mode, axis="d_m", config_columns=config_columns,
                               n_bootstrap=n_bootstrap).optima
    means = aggregate_seeds(rows, metric_column, config_columns)
    means = means.assign(key=metric_key(means[metric_column].to_numpy(dtype=float), mode))
    by_d_m = means.sort_values("key", kind="stable").drop_duplicates("d_m")  # each d_m's best allocation
    nearest = by_d_m.iloc[int(np.argmin(np.abs(np.log(by_d_m["d_m"].to_numpy(dtype=float) / d_m.value))))]
    best = by_d_m.iloc[0]
    score = PredictionScore(
        observed=ObservedOptimum(
            d_m=located.value("d_m"), n_hidden=located.value("n_hidden").value, k_e=located.value("k_e").value,
            metric=located.metric, method=located.method, edge=located.edge, best_d_m=float(best["d_m"]),
            best_metric=float(best[metric_column]), nearest_d_m=float(nearest["d_m"]),
            nearest_metric=float(nearest[metric_column]), n_allocations=located.n_allocations,
            n_trials=located.n_trials,
        ),
        d_m_inside=bool(d_m.ci_low <= located.value("d_m").value <= d_m.ci_high),
        metric_inside=bool(metric.ci_low <= located.metric.value <= metric.ci_high),
        metric_error=float(metric.value - located.metric.value),
        regret=float(nearest["key"] - best["key"]),
    )
    return score.to_dict()
