"""The project's neuron-tradeoff model (docs/tradeoff_model.md): noisy-channel neurons with redundancy across N."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fitting import (
    Estimate,
    FitError,
    JsonResult,
    blas_single_threaded,
    bootstrap_refits,
    check_mode,
    estimates_from,
    finite_rows,
    group_codes,
    group_means,
    multistart_lbfgs,
    parameters_at_bounds,
    refit_from,
    snapshot_hash,
)
from analysis.frontier import config_columns_of
from analysis.scaling import N_BOOTSTRAP, N_STARTS
from analysis.surface import AllocationPrediction, CostModel, budget_curve, budget_path, optimum_on_curve

TRADEOFF_PARAMS = ("s_floor", "s0", "gamma", "rho0", "delta", "m0", "m1")
_HALF_LOG2 = 0.5 / math.log(2)
CURVE_POINTS = 400


def information(params: np.ndarray, n_hidden: np.ndarray, k_e: np.ndarray, k_c: np.ndarray) -> np.ndarray:
    """Population information I (bits) for each parameter row (S, >=5) at the points (n,) -> (S, n)."""
    s_floor, s0, gamma, rho0, delta = (params[:, i, None] for i in range(5))
    noise = s_floor + s0 * k_e[None, :] ** (-gamma)
    rho = rho0 * k_c[None, :] ** delta
    n_effective = n_hidden[None, :] / (1 + rho * (n_hidden[None, :] - 1))
    return n_effective * _HALF_LOG2 * np.log1p(1 / noise)


def tradeoff_metric(params: np.ndarray, n_hidden, k_e, k_c, mode: str) -> np.ndarray:
    """metric = m0 − m1·I (mode 'min') or m0 + m1·I (mode 'max'); params rows as TRADEOFF_PARAMS."""
    n_hidden, k_e, k_c = (np.asarray(v, dtype=float) for v in (n_hidden, k_e, k_c))
    sign = -1.0 if mode == "min" else 1.0
    return params[:, 5, None] + sign * params[:, 6, None] * information(params, n_hidden, k_e, k_c)


@dataclass
class TradeoffFit(JsonResult):
    """Jointly fitted tradeoff model; `optima` holds the model's best allocation along each budget's sweep."""

    metric: str
    mode: str
    s_floor: Estimate
    s0: Estimate
    gamma: Estimate
    rho0: Estimate
    delta: Estimate  # fixed at 0 (interval [0, 0]) when k_c does not vary in the data
    m0: Estimate
    m1: Estimate
    delta_fitted: bool
    undetermined: list[str]  # parameters on a bound of their search box: reported there, not determined by the data
    pearson_r: float  # model vs seed-averaged metric over allocations
    residuals: list[float]  # predicted − observed mean per allocation
    optima: list[AllocationPrediction]
    n_allocations: int
    n_trials: int
    snapshot_hash: str
    n_starts: int
    n_converged: int
    n_agreeing: int
    n_bootstrap: int
    n_bootstrap_ok: int
    param_samples: np.ndarray = field(repr=False)  # (n_bootstrap_ok, 7) in TRADEOFF_PARAMS order

    def point(self) -> np.ndarray:
        return np.array([[getattr(self, name).value for name in TRADEOFF_PARAMS]])

    def predict(self, n_hidden, k_e, k_c) -> np.ndarray:
        return tradeoff_metric(self.point(), n_hidden, k_e, k_c, self.mode)[0]


def _reduced_loss(theta, log_u, log_v, n_hidden, y, weights, fit_delta):
    """Mean weighted squared residual after the best affine map of I, and its gradient (variable projection).

    θ = (log s_floor, log s0', γ, log ρ0', δ?) with k_e and k_c normalised; y is standardised.
    """
    s_floor, s0, gamma, rho0 = np.exp(theta[0]), np.exp(theta[1]), theta[2], np.exp(theta[3])
    delta = theta[4] if fit_delta else 0.0
    power = s0 * np.exp(-gamma * log_u)
    noise = s_floor + power
    rho = rho0 * np.exp(delta * log_v)
    denominator = 1 + rho * (n_hidden - 1)
    n_effective = n_hidden / denominator
    capacity = _HALF_LOG2 * np.log1p(1 / noise)
    info = n_effective * capacity
    total = weights.sum()
    info_mean, y_mean = (weights @ info) / total, (weights @ y) / total
    centred = info - info_mean
    variance = weights @ (centred * centred)
    slope = (weights @ (centred * (y - y_mean))) / variance if variance > 0 else 0.0
    residual = y - y_mean - slope * centred
    loss = (weights @ (residual * residual)) / total
    # d loss / d θ = −2/total · Σ w·r·slope·∂I/∂θ (the affine coefficients are optimal, so their change drops out)
    g = -2.0 / total * weights * residual * slope
    dinfo_dnoise = -n_effective * _HALF_LOG2 / (noise * (noise + 1))
    dinfo_drho = -capacity * n_hidden * (n_hidden - 1) / denominator ** 2
    grad = [g @ (dinfo_dnoise * s_floor), g @ (dinfo_dnoise * power), g @ (-dinfo_dnoise * power * log_u),
            g @ (dinfo_drho * rho)]
    if fit_delta:
        grad.append(g @ (dinfo_drho * rho * log_v))
    return float(loss), np.array(grad)


@blas_single_threaded
def fit_tradeoff(
    df: pd.DataFrame,
    metric: str,
    mode: str,
    n_column: str = "n_hidden",
    k_e_column: str = "k_e",
    k_c_column: str = "k_c",
    config_columns: Sequence[str] | None = None,
    n_starts: int = N_STARTS,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> TradeoffFit:
    """Fit the tradeoff model jointly across budgets (least squares on seed-averaged allocations).

    The affine map is solved exactly for each trial of the nonlinear parameters; bootstrap resamples trials.
    The connectivity exponent delta is fitted only when k_c takes >= 2 values. A parameter the data leave
    undetermined ends on its search bound and is listed in `undetermined`. Raises FitError on too few
    allocations, N or k_e that do not vary, or a map with the wrong sign (more information predicting a
    worse metric).
    """
    check_mode(mode)
    rows = finite_rows(df, [n_column, k_e_column, k_c_column, metric])
    columns = config_columns_of(rows, config_columns)
    codes, configs = group_codes(rows, columns)
    values = rows[metric].to_numpy(dtype=float)
    n_hidden, k_e, k_c = (configs[c].to_numpy(dtype=float) for c in (n_column, k_e_column, k_c_column))
    what = f"tradeoff model fit of {metric!r}"
    fit_delta = len(np.unique(k_c)) >= 2
    n_free = 4 + fit_delta + 2
    if len(configs) < n_free + 1:
        raise FitError(f"{what} needs >= {n_free + 1} distinct allocations, got {len(configs)}")
    for name, column in ((n_column, n_hidden), (k_e_column, k_e)):
        if len(np.unique(column)) < 2:
            raise FitError(f"{what}: {name!r} takes a single value; the tradeoff is not determined")
    if n_hidden.min() < 1 or k_e.min() <= 0 or k_c.min() <= 0:
        raise FitError(f"{what}: {n_column!r} must be >= 1 and {k_e_column!r}, {k_c_column!r} > 0")
    means, counts = group_means(codes, values, len(configs))
    y_centre, y_scale = float(means.mean()), float(means.std())
    if y_scale <= 1e-12 * max(abs(y_centre), 1e-300):
        raise FitError(f"{what}: {metric!r} is constant; the model is not determined")

    k_ref, k_c_ref = np.exp(np.log(k_e).mean()), np.exp(np.log(k_c).mean())
    log_u, log_v = np.log(k_e / k_ref), np.log(k_c / k_c_ref)
    names = ["log s_floor", "log s0", "gamma", "log rho0"] + (["delta"] if fit_delta else [])
    bounds = [(-15.0, 8.0), (-12.0, 12.0), (0.01, 5.0), (-20.0, 0.0)] + ([(-3.0, 3.0)] if fit_delta else [])

    def loss_for(y, weights):
        y = np.where(weights > 0, (y - y_centre) / y_scale, 0.0)
        return lambda theta: _reduced_loss(theta, log_u, log_v, n_hidden, y, weights, fit_delta)

    rng = np.random.default_rng(seed)
    starts = np.column_stack([rng.uniform(-8, 2, n_starts), rng.uniform(-4, 4, n_starts), rng.uniform(0.1, 2, n_starts),
                              np.log(rng.uniform(0.2, 20, n_starts) / n_hidden.max())]
                             + ([rng.uniform(-1, 1, n_starts)] if fit_delta else []))
    best = multistart_lbfgs(loss_for(means, counts), starts, bounds, what)
    # One budget's curve ties N to k_e, so some directions (e.g. gamma against s0) stay flat: such a parameter
    # is reported on its bound and named, and the others, the curve and its optimum still stand.
    undetermined = [name.removeprefix("log ")
                    for name in parameters_at_bounds(best.theta, bounds, names, ("log s_floor", "log rho0"))]

    def to_original(theta, y, weights):  # -> TRADEOFF_PARAMS in raw k_e, k_c units, affine map refitted
        delta = theta[4] if fit_delta else 0.0
        params = np.array([np.exp(theta[0]), np.exp(theta[1]) * k_ref ** theta[2], theta[2],
                           np.exp(theta[3]) * k_c_ref ** -delta, delta])
        info = information(params[None, :], n_hidden, k_e, k_c)[0]
        slope, intercept = np.polyfit(info, y, 1, w=np.sqrt(weights))
        sign = -1.0 if mode == "min" else 1.0
        return np.r_[params, intercept, sign * slope]

    point = to_original(best.theta, means, counts)
    if point[6] <= 0:
        raise FitError(f"{what}: the best map has more information predicting a worse {metric!r} "
                       f"(m1 = {point[6]:.3g} <= 0); the data show no tradeoff of this shape")

    def refit(indices):
        resampled, weights = group_means(codes, values, len(configs), indices)
        theta = refit_from(best, loss_for(resampled, weights), bounds)
        seen = weights > 0
        return None if theta is None else to_original(theta, np.where(seen, resampled, 0.0), weights)

    samples = bootstrap_refits(n_bootstrap, len(rows), seed + 1, refit, len(TRADEOFF_PARAMS))
    samples = samples[np.isfinite(samples).all(axis=1)]
    pred = tradeoff_metric(point[None, :], n_hidden, k_e, k_c, mode)[0]
    optima = [_budget_optimum(point, samples, group, n_column, k_e_column, k_c_column, mode)
              for _, group in configs.groupby("budget", sort=True) if group[k_e_column].nunique() >= 2] \
        if "budget" in configs.columns else []
    return TradeoffFit(
        metric=metric, mode=mode, **estimates_from(point, samples, TRADEOFF_PARAMS, what, n_bootstrap),
        delta_fitted=fit_delta, undetermined=undetermined,
        pearson_r=float(np.corrcoef(pred, means)[0, 1]), residuals=(pred - means).tolist(), optima=optima,
        n_allocations=len(configs), n_trials=len(rows),
        snapshot_hash=snapshot_hash(rows, ["trial_id", metric, *columns, "seed"]),
        n_starts=best.n_starts, n_converged=best.n_converged, n_agreeing=best.n_agreeing,
        n_bootstrap=n_bootstrap, n_bootstrap_ok=len(samples), param_samples=samples,
    )


def _budget_optimum(point, samples, group: pd.DataFrame, n_column, k_e_column, k_c_column,
                    mode) -> AllocationPrediction:
    """Model optimum along one budget's sweep (analysis.surface.budget_path)."""
    path = budget_path(group.rename(columns={n_column: "n_hidden", k_c_column: "k_c"}), CURVE_POINTS, k_e_column)
    k_grid, n_grid, k_c_grid = path["k_e"], path["n_hidden"], path["k_c"]
    return optimum_on_curve(tradeoff_metric(point[None, :], n_grid, k_grid, k_c_grid, mode)[0],
                            tradeoff_metric(samples, n_grid, k_grid, k_c_grid, mode),
                            float(group["budget"].iloc[0]), k_grid, n_grid, mode)


def predict_tradeoff_allocation(fit: TradeoffFit, budget: float, cost_model: CostModel, k_c: float,
                                k_e_range: tuple[float, float], n_grid: int = 1000) -> AllocationPrediction:
    """The model's best (N, k_e) at an unseen budget under the caller's cost model P(N, k_e), k_c held fixed."""
    k_grid, n_values = budget_curve(budget, cost_model, np.geomspace(*k_e_range, n_grid))
    k_c_grid = np.full_like(k_grid, float(k_c))
    return optimum_on_curve(fit.predict(n_values, k_grid, k_c_grid),
                            tradeoff_metric(fit.param_samples, n_values, k_grid, k_c_grid, fit.mode),
                            budget, k_grid, n_values, fit.mode)
