"""Parametric surface metric(N, k_e) = E ± (A/N^a + B/k_e^b) (Chinchilla approach 3) and its budget optimum."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.fitting import (
    HUBER_DELTA,
    Estimate,
    FitError,
    JsonResult,
    blas_single_threaded,
    bootstrap_refits,
    check_interior,
    check_mode,
    estimates_from,
    finite_rows,
    group_codes,
    group_means,
    multistart_lbfgs,
    percentile_interval,
    r_squared,
    refit_from,
    snapshot_hash,
)
from analysis.frontier import config_columns_of
from analysis.scaling import (
    N_BOOTSTRAP,
    N_STARTS,
    power_sum_loss,
    power_sum_names,
    power_sum_setup,
)

SURFACE_PARAMS = ("E", "A", "a", "B", "b")
CostModel = Callable[[float, float], float]  # (n_hidden, k_e) -> trainable parameters P


@dataclass
class SurfaceFit(JsonResult):
    """metric = E + A/N^a + B/k_e^b for mode 'min' (E − ... for 'max'), N = n_hidden."""

    metric: str
    mode: str
    E: Estimate
    A: Estimate
    a: Estimate
    B: Estimate
    b: Estimate
    r_squared: float  # over seed-averaged allocations, weighted by seed count
    residuals: list[float]  # log(predicted) − log(observed mean) per allocation
    n_allocations: int
    n_trials: int
    k_e_observed: tuple[float, float]
    snapshot_hash: str
    n_starts: int
    n_converged: int
    n_agreeing: int
    n_bootstrap: int
    n_bootstrap_ok: int
    huber_delta: float
    param_samples: np.ndarray = field(repr=False)  # (n_bootstrap_ok, 5): E, A, a, B, b

    def predict(self, n_hidden, k_e) -> np.ndarray:
        point = np.array([[getattr(self, name).value for name in SURFACE_PARAMS]])
        return surface_metric(point, np.asarray(n_hidden, dtype=float), np.asarray(k_e, dtype=float), self.mode)[0]


def surface_metric(params: np.ndarray, n_hidden: np.ndarray, k_e: np.ndarray, mode: str) -> np.ndarray:
    """Surface for each parameter row (S, 5) at the points (n,) -> (S, n)."""
    E, A, a, B, b = (params[:, i, None] for i in range(5))
    sign = 1.0 if mode == "min" else -1.0
    return E + sign * (A * n_hidden[None, :] ** (-a) + B * k_e[None, :] ** (-b))


@blas_single_threaded
def fit_surface(
    df: pd.DataFrame,
    metric: str,
    mode: str,
    n_column: str = "n_hidden",
    k_e_column: str = "k_e",
    config_columns: Sequence[str] | None = None,
    n_starts: int = N_STARTS,
    n_bootstrap: int = N_BOOTSTRAP,
    huber_delta: float = HUBER_DELTA,
    seed: int = 0,
) -> SurfaceFit:
    """Fit the surface to seed-averaged allocations (weighted by seeds) with a Huber loss on log residuals.

    Bootstrap resamples trials and re-averages. Raises FitError on too few allocations, N or k_e that do not
    vary, non-positive values, or a parameter the data leave undetermined.
    """
    check_mode(mode)
    rows = finite_rows(df, [n_column, k_e_column, metric])
    columns = config_columns_of(rows, config_columns)
    codes, configs = group_codes(rows, columns)
    values = rows[metric].to_numpy(dtype=float)
    n_hidden = configs[n_column].to_numpy(dtype=float)
    k_e = configs[k_e_column].to_numpy(dtype=float)
    what = f"surface fit of {metric!r}"
    need = len(SURFACE_PARAMS) + 1
    if len(configs) < need:
        raise FitError(f"{what} needs >= {need} distinct allocations, got {len(configs)}")
    for name, column in ((n_column, n_hidden), (k_e_column, k_e)):
        if len(np.unique(column)) < 2:
            raise FitError(f"{what}: {name!r} takes a single value; its exponent is not determined")
    if values.min() <= 0 or n_hidden.min() <= 0 or k_e.min() <= 0:
        raise FitError(f"{what} uses log residuals: {metric!r}, {n_column!r}, {k_e_column!r} must be > 0")
    means, counts = group_means(codes, values, len(configs))
    if np.ptp(means) <= 1e-12 * np.abs(means).max():
        raise FitError(f"{what}: {metric!r} is constant; the surface is not determined")

    n_ref, k_ref = np.exp(np.log(n_hidden).mean()), np.exp(np.log(k_e).mean())
    log_x = np.vstack([np.log(n_hidden / n_ref), np.log(k_e / k_ref)])
    sign = 1.0 if mode == "min" else -1.0
    floor = 1e-3 * float(values.min())
    bounds, starts = power_sum_setup(means, mode, 2, n_starts, seed)

    def loss_for(y, weights):
        y = np.where(weights > 0, y, 1.0)  # allocations absent from a resample carry weight 0
        return lambda theta: power_sum_loss(theta, log_x, y, weights, sign, huber_delta, floor)

    best = multistart_lbfgs(loss_for(means, counts), starts, bounds, what)
    check_interior(best.theta, bounds, power_sum_names(["a", "b"]), ("log E",) if mode == "min" else (), what)

    def refit(indices):
        resampled, weights = group_means(codes, values, len(configs), indices)
        return refit_from(best, loss_for(resampled, weights), bounds)

    theta_samples = bootstrap_refits(n_bootstrap, len(rows), seed + 1, refit, len(SURFACE_PARAMS))
    theta_samples = theta_samples[np.isfinite(theta_samples).all(axis=1)]

    def to_original(theta):  # amplitudes back to raw N and k_e units
        theta = np.atleast_2d(theta)
        return np.column_stack([np.exp(theta[:, 0]), np.exp(theta[:, 1]) * n_ref ** theta[:, 2], theta[:, 2],
                                np.exp(theta[:, 3]) * k_ref ** theta[:, 4], theta[:, 4]])

    point, samples = to_original(best.theta)[0], to_original(theta_samples)
    pred = surface_metric(point[None, :], n_hidden, k_e, mode)[0]
    return SurfaceFit(
        metric=metric, mode=mode, **estimates_from(point, samples, SURFACE_PARAMS, what, n_bootstrap),
        r_squared=r_squared(means, pred, counts), residuals=(np.log(pred) - np.log(means)).tolist(),
        n_allocations=len(configs), n_trials=len(rows), k_e_observed=(float(k_e.min()), float(k_e.max())),
        snapshot_hash=snapshot_hash(rows, ["trial_id", metric, *columns, "seed"]),
        n_starts=best.n_starts, n_converged=best.n_converged, n_agreeing=best.n_agreeing,
        n_bootstrap=n_bootstrap, n_bootstrap_ok=len(samples), huber_delta=huber_delta, param_samples=samples,
    )


def budget_curve(budget: float, cost_model: CostModel, k_e_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N (continuous) with cost_model(N, k_e) = budget along k_e_grid; k_e values with no N >= 1 are dropped."""
    def excess(log_n, k):
        return cost_model(float(np.exp(log_n)), float(k)) - budget

    feasible_k, n_values = [], []
    for k in k_e_grid:
        if excess(0.0, k) > 0:
            continue
        high = 1.0
        while excess(high, k) < 0:
            high *= 2
            if high > 200:
                raise FitError(f"cost model never reaches budget {budget:g} at k_e={k:g}; "
                               "it must increase with n_hidden")
        feasible_k.append(k)
        n_values.append(np.exp(brentq(excess, 0.0, high, args=(k,), xtol=1e-10)))
    if len(feasible_k) < 3:
        raise FitError(f"budget {budget:g}: fewer than 3 k_e values in the search range leave room for N >= 1")
    return np.array(feasible_k), np.array(n_values)


PATH_COLUMNS = ("k_e", "n_hidden", "k_c", "d_m")


def budget_path(group: pd.DataFrame, n_points: int, k_e_column: str = "k_e") -> dict[str, np.ndarray]:
    """One budget's sweep as a continuous path: N, k_c, d_m interpolated in log space along log k_e.

    Keys: PATH_COLUMNS present in `group` (k_e under "k_e" whatever its column is called).
    """
    group = group.sort_values(k_e_column)
    log_k = np.log(group[k_e_column].to_numpy(dtype=float))
    path = {"k_e": np.exp(np.linspace(log_k[0], log_k[-1], n_points))}
    for column in PATH_COLUMNS[1:]:
        if column in group.columns:
            path[column] = np.exp(np.interp(np.log(path["k_e"]), log_k, np.log(group[column].to_numpy(dtype=float))))
    return path


@dataclass
class AllocationPrediction(JsonResult):
    """Best allocation at a budget, point estimate and bootstrap interval; `interior` is False at a range edge."""

    budget: float
    n_hidden: Estimate
    k_e: Estimate
    metric: Estimate
    interior: bool
    k_e_range: tuple[float, float]


def optimum_on_curve(point_values: np.ndarray, sample_values: np.ndarray, budget: float, k_grid: np.ndarray,
                     n_grid: np.ndarray, mode: str) -> AllocationPrediction:
    """Best point of a budget curve for the point fit (values (G,)) and each bootstrap sample (values (S, G))."""
    def best_index(values):
        return np.argmin(values, axis=-1) if mode == "min" else np.argmax(values, axis=-1)

    i, idx = best_index(point_values), best_index(sample_values)
    rows = np.arange(len(idx))
    low, high = percentile_interval(np.column_stack([n_grid[idx], k_grid[idx], sample_values[rows, idx]]))
    return AllocationPrediction(
        budget=float(budget),
        n_hidden=Estimate(float(n_grid[i]), float(low[0]), float(high[0])),
        k_e=Estimate(float(k_grid[i]), float(low[1]), float(high[1])),
        metric=Estimate(float(point_values[i]), float(low[2]), float(high[2])),
        interior=bool(0 < i < len(k_grid) - 1), k_e_range=(float(k_grid[0]), float(k_grid[-1])),
    )


def predict_allocation(fit: SurfaceFit, budget: float, cost_model: CostModel,
                       k_e_range: tuple[float, float] | None = None, n_grid: int = 1000) -> AllocationPrediction:
    """Best (N, k_e) at `budget` under the caller's cost model P(N, k_e), with a bootstrap interval.

    The search runs over k_e on a log grid (default: observed k_e range widened 10x down and 100x up);
    check `interior` before trusting the interval.
    """
    low, high = k_e_range or (fit.k_e_observed[0] / 10, fit.k_e_observed[1] * 100)
    k_grid, n_values = budget_curve(budget, cost_model, np.geomspace(low, high, n_grid))
    point = np.array([[getattr(fit, name).value for name in SURFACE_PARAMS]])
    return optimum_on_curve(surface_metric(point, n_values, k_grid, fit.mode)[0],
                            surface_metric(fit.param_samples, n_values, k_grid, fit.mode), budget, k_grid, n_values,
                            fit.mode)
