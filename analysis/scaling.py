"""Scaling laws: the frontier law metric(P) = E ± A·P^(−α) and allocation laws y*(P) = c·P^β."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fitting import (
    HUBER_DELTA,
    Estimate,
    FitError,
    JsonResult,
    blas_single_threaded,
    check_interior,
    check_mode,
    estimates_from,
    finite_rows,
    group_codes,
    group_means,
    huber,
    multistart_lbfgs,
    percentile_interval,
    r_squared,
    refit_from,
    safe_log,
    snapshot_hash,
)
from analysis.frontier import config_columns_of, frontier_kind, frontier_mask, metric_key
from analysis.optimum import ALLOCATION_VALUES, BudgetOptima, locate_optima

N_STARTS = 128
N_BOOTSTRAP = 1000
FRONTIER_LAW_PARAMS = ("E", "A", "alpha")


@dataclass
class FrontierLawFit(JsonResult):
    """metric(P) = E + A·P^(−alpha) for mode 'min', E − A·P^(−alpha) for mode 'max', fitted on the frontier."""

    metric: str
    mode: str
    cost: str  # "budget" when fitted to each budget's optimum
    frontier: str  # "per_budget" or "pareto" (analysis.frontier.frontier_kind)
    E: Estimate
    A: Estimate
    alpha: Estimate
    r_squared: float
    residuals: list[float]  # log(predicted) − log(observed) at each frontier point
    frontier_cost: list[float]
    frontier_metric: list[float]
    n_trials: int
    snapshot_hash: str
    n_starts: int
    n_converged: int
    n_agreeing: int
    n_bootstrap: int
    n_bootstrap_ok: int
    huber_delta: float
    param_samples: np.ndarray = field(repr=False)  # (n_bootstrap_ok, 3): E, A, alpha per resample

    def predict(self, cost) -> np.ndarray:
        return _frontier_law(np.asarray(cost, dtype=float), self.E.value, self.A.value, self.alpha.value,
                             self.mode)

    def predict_band(self, cost, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval of the law at the given costs."""
        cost = np.asarray(cost, dtype=float)
        E, A, alpha = (self.param_samples[:, i, None] for i in range(3))
        low, high = percentile_interval(_frontier_law(cost[None, :], E, A, alpha, self.mode), level)
        return low, high


def _frontier_law(cost, E, A, alpha, mode):
    return E + (1.0 if mode == "min" else -1.0) * A * cost ** (-alpha)


def power_sum_loss(theta, log_x, y, weights, sign, delta, floor):
    """Weighted Huber loss on log residuals of E + sign·Σ_j A_j·x_j^(−a_j), with its gradient.

    θ = (log E, log A_1, a_1, log A_2, a_2, ...); log_x has one row per term (x_j already normalised).
    """
    E = np.exp(theta[0])
    amplitudes, exponents = np.exp(theta[1::2]), theta[2::2]
    terms = sign * amplitudes[:, None] * np.exp(-exponents[:, None] * log_x)  # (n_terms, n_points)
    log_pred, dlog = safe_log(E + terms.sum(axis=0), floor)
    loss, dloss = huber(log_pred - np.log(y), delta)
    g = weights * dloss * dlog
    grad = np.empty_like(theta)
    grad[0] = (g * E).sum()
    grad[1::2] = terms @ g
    grad[2::2] = -(terms * log_x) @ g
    return float((weights * loss).sum()), grad


def power_sum_setup(y: np.ndarray, mode: str, n_terms: int, n_starts: int, seed: int):
    """Box bounds (in θ) and random multi-starts scaled to the data, for power_sum_loss."""
    y_scale = float(np.median(y))
    log_scale = np.log(y_scale)
    bounds = [(log_scale - 25, log_scale + 5)] + [(log_scale - 25, log_scale + 15), (1e-3, 5.0)] * n_terms
    rng = np.random.default_rng(seed)
    spread = max(float(np.ptp(y)), 1e-3 * y_scale)
    E0 = y.min() * rng.uniform(0.0, 1.0, n_starts) if mode == "min" else y.max() * (1 + rng.uniform(0, 0.5, n_starts))
    columns = [np.log(np.maximum(E0, 1e-12 * y_scale))]
    for _ in range(n_terms):
        columns += [np.log(spread / n_terms) + rng.uniform(-3, 3, n_starts), rng.uniform(0.02, 2.0, n_starts)]
    return bounds, np.column_stack(columns)


def power_sum_names(exponent_names: Sequence[str]) -> list[str]:
    names = ["log E"]
    for name in exponent_names:
        names += [f"log amplitude of {name}", name]
    return names


@blas_single_threaded
def fit_frontier_law(
    df: pd.DataFrame,
    metric: str,
    mode: str,
    cost: str = "params_total",
    aggregate_seeds: bool = True,
    config_columns: Sequence[str] | None = None,
    frontier: str = "auto",
    optima: BudgetOptima | None = None,
    n_starts: int = N_STARTS,
    n_bootstrap: int = N_BOOTSTRAP,
    huber_delta: float = HUBER_DELTA,
    seed: int = 0,
) -> FrontierLawFit:
    """Fit the frontier law with a Huber loss on log residuals and bootstrap CIs.

    `frontier` (see analysis.frontier.frontier_kind): on a fixed-budget sweep ("per_budget") the law is
    fitted against the budget to each budget's located optimum (analysis.optimum; pass `optima` to reuse
    them), its intervals from the optima's bootstrap over seeds; otherwise ("pareto") to the strict Pareto
    frontier over `cost`, of seed-averaged allocations with `aggregate_seeds`, resampling trials.
    Raises FitError on too few frontier points, non-positive metrics or costs, flat data, or no convergence.
    """
    check_mode(mode)
    what = f"frontier law of {metric!r}"
    rows = finite_rows(df, [metric])
    columns = config_columns_of(rows, config_columns) if aggregate_seeds or frontier != "pareto" else []
    kind = frontier_kind(rows, frontier, columns or None)
    if kind == "per_budget":
        optima = optima or locate_optima(rows, metric, mode, config_columns=config_columns, n_bootstrap=n_bootstrap,
                                         seed=seed + 1)
        cost, n_trials, data_hash = "budget", optima.n_trials, optima.snapshot_hash
        front_cost, front_metric, metric_samples = optima.samples("metric")
        _check_law_data(front_cost, front_metric, metric, "budgets")
        resamples = [(front_cost, sample) for sample in metric_samples]
    else:
        rows = finite_rows(rows, [cost])
        front_cost, front_metric, resamples = _pareto_points(rows, metric, mode, cost, columns, n_bootstrap, seed)
        n_trials, data_hash = len(rows), snapshot_hash(rows, ["trial_id", cost, metric, *columns, "seed"])
    cost_ref = float(np.exp(np.log(front_cost).mean()))
    sign = 1.0 if mode == "min" else -1.0
    floor = 1e-3 * float(front_metric.min())
    bounds, starts = power_sum_setup(front_metric, mode, 1, n_starts, seed)

    def loss_for(c, y):
        log_x = np.log(c / cost_ref)[None, :]
        return lambda theta: power_sum_loss(theta, log_x, y, 1.0, sign, huber_delta, floor)

    best = multistart_lbfgs(loss_for(front_cost, front_metric), starts, bounds, what)
    check_interior(best.theta, bounds, power_sum_names(["alpha"]), ("log E",) if mode == "min" else (), what)
    refits = (refit_from(best, loss_for(c, y), bounds) if _enough_points(c, y) else None for c, y in resamples)
    theta_samples = np.array([theta for theta in refits if theta is not None]).reshape(-1, 3)

    def to_original(theta):  # (log E, log A', alpha) -> (E, A, alpha), A in units of the raw cost
        theta = np.atleast_2d(theta)
        return np.column_stack([np.exp(theta[:, 0]), np.exp(theta[:, 1]) * cost_ref ** theta[:, 2], theta[:, 2]])

    point, samples = to_original(best.theta)[0], to_original(theta_samples)
    estimates = estimates_from(point, samples, FRONTIER_LAW_PARAMS, what, len(resamples))
    pred = _frontier_law(front_cost, point[0], point[1], point[2], mode)
    return FrontierLawFit(
        metric=metric, mode=mode, cost=cost, frontier=kind, **estimates,
        r_squared=r_squared(front_metric, pred),
        residuals=(np.log(pred) - np.log(front_metric)).tolist(),
        frontier_cost=front_cost.tolist(), frontier_metric=front_metric.tolist(), n_trials=n_trials,
        snapshot_hash=data_hash, n_starts=best.n_starts, n_converged=best.n_converged, n_agreeing=best.n_agreeing,
        n_bootstrap=len(resamples), n_bootstrap_ok=len(samples), huber_delta=huber_delta, param_samples=samples,
    )


def _enough_points(cost: np.ndarray, metric: np.ndarray) -> bool:
    return len(np.unique(cost)) > len(FRONTIER_LAW_PARAMS) and bool(np.isfinite(metric).all())


def _pareto_points(rows: pd.DataFrame, metric: str, mode: str, cost: str, columns: list[str], n_bootstrap: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Strict Pareto frontier (cost, metric) of the (seed-averaged) allocations, and of bootstrap resamples of
    trials."""
    codes, configs = group_codes(rows, columns) if columns else (np.arange(len(rows)), rows)
    values = rows[metric].to_numpy(dtype=float)
    group_cost = configs[cost].to_numpy(dtype=float)
    n_groups = len(group_cost)

    def frontier_points(indices):
        means, counts = group_means(codes, values, n_groups, indices)
        seen = counts > 0
        on_front = frontier_mask(group_cost[seen], metric_key(means[seen], mode))
        return group_cost[seen][on_front], means[seen][on_front]

    front_cost, front_metric = frontier_points(None)
    _check_law_data(front_cost, front_metric, metric, "points on the Pareto frontier")
    if n_bootstrap < 1:
        raise FitError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    rng = np.random.default_rng(seed + 1)
    return front_cost, front_metric, [
        frontier_points(rng.integers(0, len(rows), len(rows))) for _ in range(n_bootstrap)
    ]


def _check_law_data(x: np.ndarray, y: np.ndarray, metric: str, points: str) -> None:
    if len(y) and (y.min() <= 0 or x.min() <= 0):
        raise FitError(f"frontier law of {metric!r} fits log residuals: the metric and the cost must be > 0")
    need = len(FRONTIER_LAW_PARAMS) + 1
    if len(np.unique(x)) < need:
        raise FitError(f"the frontier law of {metric!r} (3 parameters) needs at least {need} {points}, "
                       f"got {len(np.unique(x))}")
    if np.ptp(y) <= 1e-12 * np.abs(y).max():
        raise FitError(f"{metric!r} is constant along the frontier; the law is not determined")


@dataclass
class AllocationLawFit(JsonResult):
    """Optimal allocation y*(P) = coefficient·P^exponent, fitted in log-log to each budget's located optimum."""

    column: str
    metric: str
    mode: str
    coefficient: Estimate
    exponent: Estimate
    r_squared: float  # in log space
    budgets: list[float]
    optimum: list[float]
    residuals: list[float]  # log(predicted) − log(located optimum) per budget
    left_out: list[float]  # budgets whose best allocation is at the grid's edge: their optimum is not located
    n_trials: int
    snapshot_hash: str
    n_bootstrap: int
    n_bootstrap_ok: int
    param_samples: np.ndarray = field(repr=False)  # (n_bootstrap_ok, 2): coefficient, exponent

    def predict(self, budget) -> np.ndarray:
        return self.coefficient.value * np.asarray(budget, dtype=float) ** self.exponent.value

    def predict_interval(self, budget, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        budget = np.atleast_1d(np.asarray(budget, dtype=float))
        values = self.param_samples[:, :1] * budget[None, :] ** self.param_samples[:, 1:]
        return percentile_interval(values, level)


@blas_single_threaded
def fit_allocation_law(
    df: pd.DataFrame,
    column: str,
    metric: str,
    mode: str,
    config_columns: Sequence[str] | None = None,
    optima: BudgetOptima | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> AllocationLawFit:
    """Fit the optimal allocation's `column` (n_hidden, k_e, d_m, k_c) against budget as a power law.

    Each budget's optimum is located between grid points (analysis.optimum.locate_optima; pass `optima` to
    reuse them); budgets whose best allocation is at the grid's edge are left out. The intervals refit the
    optima's bootstrap replicates. Needs interior optima at >= 3 budgets.
    """
    check_mode(mode)
    optima = optima or locate_optima(df, metric, mode, config_columns=config_columns, n_bootstrap=n_bootstrap,
                                     seed=seed + 1)
    if column not in ALLOCATION_VALUES:
        raise FitError(f"allocation law of {column!r}: column must be one of {list(ALLOCATION_VALUES)}")
    budgets, observed, samples = optima.samples(column, interior_only=True)
    left_out = [o.budget for o in optima.optima if not o.interior]
    if len(budgets) < 3:
        at_edge = f"; {len(left_out)} have their best at the grid's edge" if left_out else ""
        raise FitError(f"allocation law of {column!r} needs >= 3 budgets with an interior optimum, "
                       f"got {len(budgets)}{at_edge}")
    if np.isnan(observed).any():
        raise FitError(f"allocation law of {column!r}: trials lack column {column!r}")
    log_budget = np.log(budgets)
    slope, intercept = np.polyfit(log_budget, np.log(observed), 1)
    point = np.array([np.exp(intercept), slope])
    if len(samples):
        slopes, intercepts = np.polyfit(log_budget, np.log(samples).T, 1)
        param_samples = np.column_stack([np.exp(intercepts), slopes])
    else:
        param_samples = np.empty((0, 2))
    param_samples = param_samples[np.isfinite(param_samples).all(axis=1)]
    estimates = estimates_from(point, param_samples, ("coefficient", "exponent"), f"allocation law of {column!r}",
                               optima.n_bootstrap)
    log_pred = intercept + slope * log_budget
    return AllocationLawFit(
        column=column, metric=metric, mode=mode, **estimates,
        r_squared=r_squared(np.log(observed), log_pred) if np.ptp(observed) > 0 else float("nan"),
        budgets=budgets.tolist(), optimum=observed.tolist(), residuals=(log_pred - np.log(observed)).tolist(),
        left_out=left_out, n_trials=optima.n_trials, snapshot_hash=optima.snapshot_hash,
        n_bootstrap=optima.n_bootstrap, n_bootstrap_ok=len(param_samples), param_samples=param_samples,
    )


def fit_allocation_laws(df: pd.DataFrame, metric: str, mode: str,
                        columns: Sequence[str] = ("n_hidden", "k_e", "d_m"),
                        config_columns: Sequence[str] | None = None,
                        optima: BudgetOptima | None = None, n_bootstrap: int = N_BOOTSTRAP,
                        seed: int = 0) -> dict[str, AllocationLawFit]:
    """N*(P), k_e*(P), d_m*(P) (or the given columns) as power laws, from one location of the optima."""
    optima = optima or locate_optima(df, metric, mode, config_columns=config_columns, n_bootstrap=n_bootstrap,
                                     seed=seed + 1)
    return {column: fit_allocation_law(df, column, metric, mode, optima=optima) for column in columns}
