"""Every law of a sweep in one shape: parameters with intervals, fit quality, curves to draw, a prediction.

The API's laws router, `orchestrator fit --json` and `orchestrator plot` all go through `fit_law`, so a law
reads the same wherever it is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fitting import Estimate, FitError, JsonResult, finite_rows, percentile_interval
from analysis.frontier import frontier_kind
from analysis.optimum import BudgetOptima, locate_optima
from analysis.scaling import FRONTIER_LAW_PARAMS, fit_allocation_laws, fit_frontier_law
from analysis.surface import (
    SURFACE_PARAMS,
    CostModel,
    budget_path,
    fit_surface,
    predict_allocation,
    surface_metric,
)
from analysis.tradeoff import TRADEOFF_PARAMS, fit_tradeoff, predict_tradeoff_allocation, tradeoff_metric

LAWS = ("frontier", "allocation", "surface", "tradeoff")
ALLOCATION_LAW_COLUMNS = ("n_hidden", "k_e", "d_m")
CURVE_POINTS = 60


@dataclass
class Curve(JsonResult):
    """A fitted curve to overlay on the data: points (x, y, 95 % low, 95 % high) along `x`."""

    label: str
    budget: float | None  # the budget whose sweep the curve follows; None for a law across budgets
    x: str
    y: str
    points: list[list[float]]


@dataclass
class Prediction(JsonResult):
    """What a law predicts at a budget; fields a law does not predict are None."""

    budget: float
    d_m: Estimate | None
    n_hidden: Estimate | None
    k_e: Estimate | None
    metric: Estimate | None
    interior: bool | None  # False: the predicted optimum is at the end of the searched range


@dataclass
class LawReport(JsonResult):
    law: str
    metric: str
    mode: str
    formula: str
    fitted_on: str
    parameters: dict[str, Estimate]
    undetermined: list[str]  # parameters the data leave undetermined (reported on their search bound)
    quality: dict[str, float]  # r_squared, or pearson_r for the tradeoff model
    n_trials: int
    n_bootstrap: int
    n_bootstrap_ok: int
    snapshot_hash: str
    notes: list[str]
    curves: list[Curve]
    prediction: Prediction | None


def fit_law(trials: pd.DataFrame, law: str, metric: str, mode: str, budget: float | None = None,
            frontier: str = "auto", optima: BudgetOptima | None = None, config_columns: Sequence[str] | None = None,
            n_bootstrap: int = 200, seed: int = 0) -> LawReport:
    """Fit one of LAWS to the trials (metric in column `metric`); with `budget`, predict there.

    FitError if it cannot."""
    if law not in LAWS:
        raise FitError(f"law must be one of {', '.join(LAWS)}, got {law!r}")
    if budget is not None and not (np.isfinite(budget) and budget > 0):
        raise FitError(f"budget must be a positive number, got {budget!r}")
    common = {"config_columns": config_columns, "n_bootstrap": n_bootstrap, "seed": seed}
    if law in ("frontier", "allocation") and optima is None and frontier != "pareto":
        optima = _optima_if_budgets(trials, metric, mode, frontier, **common)
    if law == "frontier":
        return _frontier_report(trials, metric, mode, budget, frontier, optima, common)
    if law == "allocation":
        if optima is None:
            raise FitError("allocation laws need a fixed-budget sweep: trials with budgets and allocations per budget")
        return _allocation_report(trials, metric, mode, budget, optima)
    if law == "surface":
        return _surface_report(trials, metric, mode, budget, common)
    return _tradeoff_report(trials, metric, mode, budget, common)


def fit_laws(trials: pd.DataFrame, metric: str, mode: str, laws: Sequence[str] = LAWS, metric_name: str | None = None,
             **kwargs) -> tuple[list[LawReport], dict[str, str]]:
    """(the laws that could be fitted, {law: why not} for the others); the optima are located once for all.

    `metric_name` names the metric in formulas and messages when its column is called otherwise.
    """
    if metric_name and metric_name != metric and metric_name not in trials.columns:
        trials, metric = trials.rename(columns={metric: metric_name}), metric_name
    if "optima" not in kwargs and kwargs.get("frontier", "auto") != "pareto":
        try:
            kwargs["optima"] = _optima_if_budgets(trials, metric, mode, kwargs.get("frontier", "auto"),
                                                  kwargs.get("config_columns"), kwargs.get("n_bootstrap", 200),
                                                  kwargs.get("seed", 0))
        except FitError:
            kwargs["optima"] = None
    reports, refused = [], {}
    for law in laws:
        try:
            reports.append(fit_law(trials, law, metric, mode, **kwargs))
        except FitError as error:
            refused[law] = str(error)
    return reports, refused


def _optima_if_budgets(trials, metric, mode, frontier, config_columns, n_bootstrap, seed) -> BudgetOptima | None:
    rows = finite_rows(trials, [metric])
    if frontier_kind(rows, frontier, config_columns) != "per_budget":
        return None
    return locate_optima(rows, metric, mode, config_columns=config_columns, n_bootstrap=n_bootstrap, seed=seed + 1)


def _estimates(fit, names: Sequence[str]) -> dict[str, Estimate]:
    return {name: getattr(fit, name) for name in names}


def _grid(low: float, high: float) -> np.ndarray:
    return np.geomspace(low, high, CURVE_POINTS)


def _frontier_report(trials, metric, mode, budget, frontier, optima, common) -> LawReport:
    fit = fit_frontier_law(trials, metric, mode, frontier=frontier, optima=optima, **common)
    costs = np.array(fit.frontier_cost)
    grid = _grid(costs.min() / 1.5, max(costs.max(), budget or 0) * 1.5)
    low, high = fit.predict_band(grid)
    prediction = None
    if budget is not None:
        band = fit.predict_band([budget])
        prediction = Prediction(budget, None, None, None,
                                Estimate(float(fit.predict(budget)), float(band[0][0]), float(band[1][0])), None)
    sign = "+" if mode == "min" else "−"
    fitted_on = ("each budget's located optimum (per-budget frontier)" if fit.frontier == "per_budget"
                 else f"the Pareto frontier over {fit.cost}")
    return LawReport(
        law="frontier", metric=metric, mode=mode, formula=f"{metric} = E {sign} A·{fit.cost}^(−alpha)",
        fitted_on=fitted_on, parameters=_estimates(fit, FRONTIER_LAW_PARAMS), undetermined=[],
        quality={"r_squared": fit.r_squared}, n_trials=fit.n_trials, n_bootstrap=fit.n_bootstrap,
        n_bootstrap_ok=fit.n_bootstrap_ok, snapshot_hash=fit.snapshot_hash, notes=[],
        curves=[Curve("frontier law", None, fit.cost, metric,
                      np.column_stack([grid, fit.predict(grid), low, high]).tolist())],
        prediction=prediction,
    )


def _allocation_report(trials, metric, mode, budget, optima: BudgetOptima) -> LawReport:
    fits = fit_allocation_laws(trials, metric, mode, columns=ALLOCATION_LAW_COLUMNS, optima=optima)
    first = fits[ALLOCATION_LAW_COLUMNS[0]]
    budgets = np.array(first.budgets)
    grid = _grid(budgets.min() / 1.5, max(budgets.max(), budget or 0) * 1.5)
    curves: list[Curve] = []
    parameters: dict[str, Estimate] = {}
    for column, fit in fits.items():
        parameters |= {f"{column}.coefficient": fit.coefficient, f"{column}.exponent": fit.exponent}
        low, high = fit.predict_interval(grid)
        curves.append(Curve(f"{column}*(P)", None, "budget", column,
                            np.column_stack([grid, fit.predict(grid), low, high]).tolist()))

    def at_budget(column: str) -> Estimate:
        low, high = fits[column].predict_interval([budget])
        return Estimate(float(fits[column].predict(budget)), float(low[0]), float(high[0]))

    prediction = None if budget is None else Prediction(budget, at_budget("d_m"), at_budget("n_hidden"),
                                                         at_budget("k_e"), None, None)
    notes = [f"budget {b:.4g} left out: its best allocation is at the grid's edge" for b in first.left_out]
    return LawReport(
        law="allocation", metric=metric, mode=mode, formula="y*(P) = coefficient·P^exponent for y = N, k_e, d_m",
        fitted_on=f"each budget's optimum located along {optima.axis}", parameters=parameters, undetermined=[],
        quality={f"{column}.r_squared": fit.r_squared for column, fit in fits.items()}, n_trials=first.n_trials,
        n_bootstrap=first.n_bootstrap, n_bootstrap_ok=min(f.n_bootstrap_ok for f in fits.values()),
        snapshot_hash=first.snapshot_hash, notes=notes, curves=curves, prediction=prediction,
    )


def observed_cost_model(trials: pd.DataFrame) -> tuple[CostModel, float]:
    """(P(N, k_e), k_c) of the sweep's own network: P = N·(k_c + k_e) + the readout's constant (DESIGN §3).

    k_c and the constant are the trials' medians, so the model holds for a sweep that keeps them fixed.
    """
    rows = finite_rows(trials, ["n_hidden", "k_e", "k_c", "params_total"])
    if rows.empty:
        raise FitError("no trial has n_hidden, k_e, k_c and params_total: no cost model to predict with")
    k_c = float(rows["k_c"].median())
    fixed = float((rows["params_total"] - rows["n_hidden"] * (rows["k_c"] + rows["k_e"])).median())
    return (lambda n_hidden, k_e: n_hidden * (k_c + k_e) + fixed), k_c


def d_m_of_k_e(trials: pd.DataFrame, k_e: np.ndarray) -> np.ndarray:
    """d_m at the given k_e, interpolated in log-log between the trials' allocations (end slopes beyond them)."""
    pairs = finite_rows(trials, ["k_e", "d_m"]).drop_duplicates("k_e").sort_values("k_e")
    log_k, log_d = np.log(pairs["k_e"].to_numpy(dtype=float)), np.log(pairs["d_m"].to_numpy(dtype=float))
    log_x = np.log(np.asarray(k_e, dtype=float))
    if len(log_k) < 2:
        return np.full_like(log_x, np.exp(log_d[0]) if len(log_d) else np.nan)
    low_slope = (log_d[1] - log_d[0]) / (log_k[1] - log_k[0])
    high_slope = (log_d[-1] - log_d[-2]) / (log_k[-1] - log_k[-2])
    inside = np.interp(log_x, log_k, log_d)
    below, above = log_d[0] + low_slope * (log_x - log_k[0]), log_d[-1] + high_slope * (log_x - log_k[-1])
    return np.exp(np.where(log_x < log_k[0], below, np.where(log_x > log_k[-1], above, inside)))


def _allocation_prediction(trials, predicted) -> Prediction:
    d_m = Estimate(*(float(d_m_of_k_e(trials, np.array([v]))[0]) for v in
                     (predicted.k_e.value, predicted.k_e.ci_low, predicted.k_e.ci_high)))
    return Prediction(predicted.budget, d_m, predicted.n_hidden, predicted.k_e, predicted.metric, predicted.interior)


def _budget_curves(trials: pd.DataFrame, metric: str, evaluate) -> list[Curve]:
    """Each budget's model curve along its sweep: evaluate(path) -> (values, low, high) over budget_path points."""
    curves = []
    allocations = finite_rows(trials, ["budget", "k_e", "n_hidden", "d_m"]).drop_duplicates(["budget", "k_e"])
    for _, group in allocations.groupby("budget", sort=True):
        if group["k_e"].nunique() < 2:
            continue
        budget = float(group["budget"].iloc[0])
        path = budget_path(group, CURVE_POINTS)
        values, low, high = evaluate(path)
        curves.append(Curve(f"budget {budget:.4g}", budget, "d_m", metric,
                            np.column_stack([path["d_m"], values, low, high]).tolist()))
    return curves


def _surface_report(trials, metric, mode, budget, common) -> LawReport:
    fit = fit_surface(trials, metric, mode, **common)

    def evaluate(path):
        low, high = percentile_interval(surface_metric(fit.param_samples, path["n_hidden"], path["k_e"], mode))
        return fit.predict(path["n_hidden"], path["k_e"]), low, high

    prediction = None
    if budget is not None:
        cost_model, _ = observed_cost_model(trials)
        prediction = _allocation_prediction(trials, predict_allocation(fit, budget, cost_model))
    sign = "+" if mode == "min" else "−"
    return LawReport(
        law="surface", metric=metric, mode=mode, formula=f"{metric} = E {sign} (A/N^a + B/k_e^b)",
        fitted_on="seed-averaged allocations of all budgets", parameters=_estimates(fit, SURFACE_PARAMS),
        undetermined=[], quality={"r_squared": fit.r_squared}, n_trials=fit.n_trials, n_bootstrap=fit.n_bootstrap,
        n_bootstrap_ok=fit.n_bootstrap_ok, snapshot_hash=fit.snapshot_hash, notes=[],
        curves=_budget_curves(trials, metric, evaluate), prediction=prediction,
    )


def _tradeoff_report(trials, metric, mode, budget, common) -> LawReport:
    fit = fit_tradeoff(trials, metric, mode, **common)

    def evaluate(path):
        k_c = path.get("k_c", np.full_like(path["k_e"], float(trials["k_c"].median())))
        low, high = percentile_interval(tradeoff_metric(fit.param_samples, path["n_hidden"], path["k_e"], k_c, mode))
        return fit.predict(path["n_hidden"], path["k_e"], k_c), low, high

    prediction = None
    if budget is not None:
        cost_model, k_c = observed_cost_model(trials)
        k_e = finite_rows(trials, ["k_e"])["k_e"]
        predicted = predict_tradeoff_allocation(fit, budget, cost_model, k_c, (k_e.min() / 10, k_e.max() * 100))
        prediction = _allocation_prediction(trials, predicted)
    notes = [f"{name} is not determined by these data: reported on its search bound" for name in fit.undetermined]
    if not fit.delta_fitted:
        notes.append("k_c does not vary: delta fixed at 0")
    sign = "−" if mode == "min" else "+"
    return LawReport(
        law="tradeoff", metric=metric, mode=mode,
        formula=f"{metric} = m0 {sign} m1·N_eff·½log2(1 + 1/(s_floor + s0·k_e^−gamma)), "
                "N_eff = N/(1 + rho0·k_c^delta·(N − 1))",
        fitted_on="seed-averaged allocations of all budgets (docs/tradeoff_model.md)",
        parameters=_estimates(fit, TRADEOFF_PARAMS), undetermined=fit.undetermined,
        quality={"pearson_r": fit.pearson_r}, n_trials=fit.n_trials, n_bootstrap=fit.n_bootstrap,
        n_bootstrap_ok=fit.n_bootstrap_ok, snapshot_hash=fit.snapshot_hash, notes=notes,
        curves=_budget_curves(trials, metric, evaluate), prediction=prediction,
    )
