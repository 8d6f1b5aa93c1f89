"""Scaling laws: the frontier law metric(P) = E ± A·P^(−α) and allocation laws y*(P) = c·P^β."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fitting import (
    HUBER_DELTA, Estimate, FitError, JsonResult, blas_single_threaded, bootstrap_refits, check_interior,
    check_mode, estimates_from, finite_rows, group_codes, group_means, huber, multistart_lbfgs,
    percentile_interval, r_squared, refit_from, safe_log, snapshot_hash,
)
from analysis.frontier import config_columns_of, frontier_mask, metric_key

N_STARTS = 128
N_BOOTSTRAP = 1000
FRONTIER_LAW_PARAMS = ("E", "A", "alpha")


@dataclass
class FrontierLawFit(JsonResult):
    """metric(P) = E + A·P^(−alpha) for mode 'min', E − A·P^(−alpha) for mode 'max', fitted on the frontier."""

    metric: str
    mode: str
    cost: str
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
    n_starts: int = N_STARTS,
    n_bootstrap: int = N_BOOTSTRAP,
    huber_delta: float = HUBER_DELTA,
    seed: int = 0,
) -> FrontierLawFit:
    """Fit the frontier law with a Huber loss on log residuals; bootstrap CIs by resampling trials.

    With `aggregate_seeds` the frontier is taken over seed-averaged allocations (re-averaged in each resample).
    Raises FitError on too few frontier points, non-positive metrics or costs, flat data, or no convergence.
    """
    check_mode(mode)
    rows = finite_rows(df, [cost, metric])
    columns = config_columns_of(rows, config_columns) if aggregate_seeds else []
    codes, configs = group_codes(rows, columns) if columns else (np.arange(len(rows)), rows)
    values = rows[metric].to_numpy(dtype=float)
    group_cost = configs[cost].to_numpy(dtype=float) if columns else rows[cost].to_numpy(dtype=float)
    if len(rows) and (values.min() <= 0 or group_cost.min() <= 0):
        raise FitError(f"frontier law fits log residuals: {metric!r} and {cost!r} must be > 0")
    n_groups = len(group_cost)

    def frontier_points(indices):
        means, counts = group_means(codes, values, n_groups, indices)
        seen = counts > 0
        on_front = frontier_mask(group_cost[seen], metric_key(means[seen], mode))
        return group_cost[seen][on_front], means[seen][on_front]

    front_cost, front_metric = frontier_points(None)
    _check_law_data(front_cost, front_metric, metric, cost)
    cost_ref = float(np.exp(np.log(front_cost).mean()))
    sign = 1.0 if mode == "min" else -1.0
    floor = 1e-3 * float(front_metric.min())
    bounds, starts = power_sum_setup(front_metric, mode, 1, n_starts, seed)

    def loss_for(c, y):
        log_x = np.log(c / cost_ref)[None, :]
        return lambda theta: power_sum_loss(theta, log_x, y, 1.0, sign, huber_delta, floor)

    best = multistart_lbfgs(loss_for(front_cost, front_metric), starts, bounds, f"frontier law of {metric!r}")
    check_interior(best.theta, bounds, power_sum_names(["alpha"]),
                   ("log E",) if mode == "min" else (), f"frontier law of {metric!r}")

    def refit(indices):
        c, y = frontier_points(indices)
        if len(c) < len(FRONTIER_LAW_PARAMS) + 1:
            return None
        return refit_from(best, loss_for(c, y), bounds)

    theta_samples = bootstrap_refits(n_bootstrap, len(rows), seed + 1, refit, 3)
    theta_samples = theta_samples[np.isfinite(theta_samples).all(axis=1)]

    def to_original(theta):  # (log E, log A', alpha) -> (E, A, alpha), A in units of the raw cost
        theta = np.atleast_2d(theta)
        return np.column_stack([np.exp(theta[:, 0]), np.exp(theta[:, 1]) * cost_ref ** theta[:, 2], theta[:, 2]])

    point, samples = to_original(best.theta)[0], to_original(theta_samples)
    estimates = estimates_from(point, samples, FRONTIER_LAW_PARAMS, f"frontier law of {metric!r}", n_bootstrap)
    pred = _frontier_law(front_cost, *point, mode)
    return FrontierLawFit(
        metric=metric, mode=mode, cost=cost, **estimates,
        r_squared=r_squared(front_metric, pred),
        residuals=(np.log(pred) - np.log(front_metric)).tolist(),
        frontier_cost=front_cost.tolist(), frontier_metric=front_metric.tolist(), n_trials=len(rows),
        snapshot_hash=snapshot_hash(rows, ["trial_id", cost, metric, *columns, "seed"]),
        n_starts=best.n_starts, n_converged=best.n_converged, n_agreeing=best.n_agreeing,
        n_bootstrap=n_bootstrap, n_bootstrap_ok=len(samples), huber_delta=huber_delta, param_samples=samples,
    )


def _check_law_data(x: np.ndarray, y: np.ndarray, metric: str, cost: str) -> None:
    need = len(FRONTIER_LAW_PARAMS) + 1
    if len(np.unique(x)) < need:
        raise FitError(f"frontier of {metric!r} has {len(np.unique(x))} distinct {cost!r} values; "
                       f"a 3-parameter law needs at least {need}")
    if np.ptp(y) <= 1e-12 * np.abs(y).max():
        raise FitError(f"{metric!r} is constant along the frontier; the law is not determined")


@dataclass
class AllocationLawFit(JsonResult):
    """Optimal allocation y*(P) = coefficient·P^exponent, fitted in log-log on the per-budget optima."""

    column: str
    metric: str
    mode: str
    coefficient: Estimate
    exponent: Estimate
    r_squared: float  # in log space
    budgets: list[float]
    optimum: list[float]
    residuals: list[float]  # log(predicted) − log(observed optimum) per budget
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
    refine: bool = True,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> AllocationLawFit:
    """Fit the best allocation's `column` (n_hidden, k_e, d_m, ...) against budget as a power law.

    The optimum per budget is the best seed-averaged allocation; with `refine`, an interior optimum moves to
    the vertex of a parabola in log(column) through it and its two neighbours, so the law is not stuck on
    the grid. The bootstrap resamples trials and re-finds the optima. Needs >= 3 budgets, `column` > 0.
    """
    check_mode(mode)
    rows = finite_rows(df, ["budget", column, metric])
    columns = config_columns_of(rows, config_columns)
    if column not in columns or "budget" not in columns:
        raise FitError(f"allocation law needs 'budget' and {column!r} among the config columns {columns}")
    codes, configs = group_codes(rows, columns)
    values = rows[metric].to_numpy(dtype=float)
    budgets, budget_index = np.unique(configs["budget"].to_numpy(dtype=float), return_inverse=True)
    allocation = configs[column].to_numpy(dtype=float)
    if len(budgets) < 3:
        raise FitError(f"allocation law of {column!r} needs trials at >= 3 budgets, got {len(budgets)}")
    if allocation.min() <= 0 or budgets.min() <= 0:
        raise FitError(f"allocation law is a power law: {column!r} and 'budget' must be > 0")
    log_budget = np.log(budgets)

    members_by_budget = [np.flatnonzero(budget_index == b)[np.argsort(allocation[budget_index == b], kind="stable")]
                         for b in range(len(budgets))]

    def optimum(indices):
        means, counts = group_means(codes, values, len(allocation), indices)
        which, best = [], []
        for b, members in enumerate(members_by_budget):
            seen = members[counts[members] > 0]
            if len(seen):
                which.append(b)
                best.append(_best_value(allocation[seen], metric_key(means[seen], mode), refine))
        return np.array(which, dtype=int), np.array(best)

    def log_log_fit(indices):
        which, best = optimum(indices)
        if len(which) < 3:
            return None
        slope, intercept = np.polyfit(log_budget[which], np.log(best), 1)
        return np.array([np.exp(intercept), slope])

    _, observed = optimum(None)
    point = log_log_fit(None)
    samples = bootstrap_refits(n_bootstrap, len(rows), seed + 1, log_log_fit, 2)
    samples = samples[np.isfinite(samples).all(axis=1)]
    estimates = estimates_from(point, samples, ("coefficient", "exponent"), f"allocation law of {column!r}",
                               n_bootstrap)
    log_pred = np.log(point[0]) + point[1] * log_budget
    return AllocationLawFit(
        column=column, metric=metric, mode=mode, **estimates,
        r_squared=r_squared(np.log(observed), log_pred) if np.ptp(observed) > 0 else float("nan"),
        budgets=budgets.tolist(), optimum=observed.tolist(), residuals=(log_pred - np.log(observed)).tolist(),
        n_trials=len(rows), snapshot_hash=snapshot_hash(rows, ["trial_id", metric, *columns, "seed"]),
        n_bootstrap=n_bootstrap, n_bootstrap_ok=len(samples), param_samples=samples,
    )


def _best_value(grid: np.ndarray, key: np.ndarray, refine: bool) -> float:
    """Grid value with the lowest key (grid sorted), or the parabola vertex in log(grid) around it."""
    i = int(np.argmin(key))
    if not refine or i == 0 or i == len(grid) - 1:
        return float(grid[i])
    t = np.log(grid[i - 1:i + 2])
    if not (t[0] < t[1] < t[2]):
        return float(grid[i])
    curvature, slope, _ = np.polyfit(t, key[i - 1:i + 2], 2)
    if curvature <= 0:
        return float(grid[i])
    return float(np.exp(np.clip(-slope / (2 * curvature), t[0], t[2])))


def fit_allocation_laws(df: pd.DataFrame, metric: str, mode: str, columns: Sequence[str] = ("n_hidden", "k_e"),
                        **kwargs) -> dict[str, AllocationLawFit]:
    """N*(P) and k_e*(P) (or the given columns) as power laws; keyword arguments go to fit_allocation_law."""
    return {column: fit_allocation_law(df, column, metric, mode, **kwargs) for column in columns}
