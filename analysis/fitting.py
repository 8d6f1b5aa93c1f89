"""Shared fitting discipline: input checks, Huber loss on log residuals, multi-start L-BFGS, bootstrap."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from scipy.optimize import minimize

HUBER_DELTA = 1e-3
CI_LEVEL = 0.95


class FitError(ValueError):
    """A fit that cannot give a trustworthy number (too few points, degenerate data, no convergence)."""


_OPENBLAS_THREAD_SYMBOLS = ("scipy_openblas_{}_num_threads64_", "scipy_openblas_{}_num_threads",
                            "openblas_{}_num_threads64_", "openblas_{}_num_threads")


def _loaded_openblas_controls() -> list[tuple[Callable, Callable]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux; else none)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern in _OPENBLAS_THREAD_SYMBOLS:
            getter, setter = (getattr(lib, pattern.format(verb), None) for verb in ("get", "set"))
            if getter is not None and setter is not None:
                controls.append((getter, setter))
                break
    return controls


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run with OpenBLAS on one thread, then restore.

    The fits make many tiny LAPACK calls (inside L-BFGS-B and lstsq); OpenBLAS threads only add
    synchronisation cost there, 3x or more when the cores are busy with other work.
    """
    controls = _loaded_openblas_controls()
    previous = [getter() for getter, _ in controls]
    for _, setter in controls:
        setter(1)
    try:
        yield
    finally:
        for (_, setter), count in zip(controls, previous):
            setter(count)


def blas_single_threaded(fit: Callable) -> Callable:
    """Decorator form of single_blas_thread for the public fit functions."""

    @functools.wraps(fit)
    def wrapper(*args, **kwargs):
        with single_blas_thread():
            return fit(*args, **kwargs)

    return wrapper


def check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise FitError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FitError(f"trials lack column(s) {missing}; have {list(df.columns)}")


def finite_rows(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows whose given columns are all finite numbers (failed trials carry NaN metrics and are skipped)."""
    require_columns(df, columns)
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return df.loc[np.isfinite(values).all(axis=1)]


def snapshot_hash(df: pd.DataFrame, columns: Sequence[str]) -> str:
    """sha256 of the given columns, row order independent, so a fit names exactly the data it saw."""
    present = [c for c in columns if c in df.columns]
    rows = df[present].map(str).agg("\x1f".join, axis=1).sort_values()  # map(str): NaN becomes "nan", not a float
    digest = hashlib.sha256("\x1f".join(present).encode())
    for row in rows:
        digest.update(row.encode() + b"\n")
    return digest.hexdigest()


def to_jsonable(value):
    """Recursively turn numpy scalars/arrays and non-finite floats into JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass
class Estimate:
    """A fitted parameter: point value (unrounded) and a bootstrap percentile interval."""

    value: float
    ci_low: float
    ci_high: float

    def contains(self, x: float, rtol: float = 1e-9) -> bool:
        slack = rtol * max(abs(self.ci_low), abs(self.ci_high))
        return self.ci_low - slack <= x <= self.ci_high + slack


class JsonResult:
    """Mixin for result dataclasses: `to_dict()` gives JSON-safe output; fields named `*_samples` stay private."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name.endswith("_samples"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Estimate):
                value = dataclasses.asdict(value)
            elif isinstance(value, dict):
                value = {k: dataclasses.asdict(v) if isinstance(v, Estimate) else v for k, v in value.items()}
            elif isinstance(value, list):
                value = [v.to_dict() if isinstance(v, JsonResult) else v for v in value]
            elif isinstance(value, JsonResult):
                value = value.to_dict()
            out[f.name] = value
        return to_jsonable(out)


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - level) / 2
    return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def safe_log(pred: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """log(pred) continued linearly below `floor` (C1), and its derivative.

    Keeps the loss finite where a trial parameter set predicts a non-positive metric, so the optimiser
    is pushed back instead of stopping at an infinite value.
    """
    above = pred >= floor
    clipped = np.where(above, pred, floor)
    value = np.where(above, np.log(clipped), math.log(floor) + (pred - floor) / floor)
    slope = np.where(above, 1.0 / clipped, 1.0 / floor)
    return value, slope


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals and its derivative."""
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    slope = np.where(small, r, delta * np.sign(r))
    return value, slope


def estimates_from(point: np.ndarray, samples: np.ndarray, names: Sequence[str], what: str,
                   n_requested: int) -> dict[str, Estimate]:
    """Named Estimates from a point fit and its bootstrap samples (rows).

    FitError when fewer than half the requested resamples could be refitted: the fit then hinges on a
    few trials, and its interval would hide that.
    """
    if len(samples) < max(2, n_requested / 2):
        raise FitError(f"{what}: only {len(samples)} of {n_requested} bootstrap resamples could be refitted; "
                       "the fit hinges on a few trials (too few points or data without a trend)")
    low, high = percentile_interval(samples)
    return {name: Estimate(float(p), float(lo), float(hi)) for name, p, lo, hi in zip(names, point, low, high)}


def r_squared(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = np.ones_like(y) if weights is None else weights
    mean = np.average(y, weights=w)
    return float(1 - (w * (y - pred) ** 2).sum() / (w * (y - mean) ** 2).sum())


@dataclass
class MultiStartResult:
    theta: np.ndarray
    loss: float
    loss_scale: float  # pass to refit_from so warm-started refits use the same tolerances
    n_starts: int
    n_converged: int
    n_agreeing: int  # converged starts within 0.1 % (relative) of the best loss before polishing


N_POLISHED = 5
# A loss this small (log residuals ~1e-10) is a minimum at float precision, whatever the line search says: from such
# a start L-BFGS-B (seen with scipy 1.17) can end ABNORMAL, finding no decrease in what is only round-off.
EXACT_FIT_LOSS = 1e-20


def _lbfgs(loss_and_grad, theta0, bounds, scale: float = 1.0):
    """L-BFGS-B on loss/scale.

    L-BFGS-B's stopping rules are absolute for losses below 1 (relative reduction is taken against
    max(|f|, 1)), so a loss minimised at 1e-5 stops far from its minimum unless rescaled to order 1.
    """
    def scaled(theta):
        value, grad = loss_and_grad(theta)
        return value / scale, grad / scale

    res = minimize(scaled, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 5000})
    loss = float(res.fun) * scale
    return bool(np.isfinite(loss)) and (res.success or loss <= EXACT_FIT_LOSS), res.x, loss


def multistart_lbfgs(
    loss_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: np.ndarray,
    bounds: Sequence[tuple[float, float]],
    what: str,
) -> MultiStartResult:
    """Minimise from every start, then polish the best few at the loss's own scale; FitError if none converge."""
    converged = []
    for start in starts:
        ok, theta, loss = _lbfgs(loss_and_grad, start, bounds)
        if ok:
            converged.append((loss, theta))
    if not converged:
        raise FitError(f"{what}: none of {len(starts)} L-BFGS starts converged")
    converged.sort(key=lambda pair: pair[0])
    best_loss = converged[0][0]
    scale = max(best_loss, 1e-300)
    agreeing = sum(1 for loss, _ in converged if loss <= best_loss + 1e-3 * scale)
    polished = [_lbfgs(loss_and_grad, theta, bounds, scale) for _, theta in converged[:N_POLISHED]]
    candidates = [(loss, theta) for ok, theta, loss in polished if ok] + converged[:1]
    loss, theta = min(candidates, key=lambda pair: pair[0])
    return MultiStartResult(theta, loss, scale, len(starts), len(converged), agreeing)


def parameters_at_bounds(theta: np.ndarray, bounds: Sequence[tuple[float, float]], names: Sequence[str],
                         free_lower: Sequence[str] = ()) -> list[str]:
    """Names of the parameters that ended on their box bound (except the lower bounds listed as free)."""
    at_bounds = []
    for value, (low, high), name in zip(theta, bounds, names):
        span = high - low
        if value >= high - 1e-6 * span or (value <= low + 1e-6 * span and name not in free_lower):
            at_bounds.append(name)
    return at_bounds


def check_interior(theta: np.ndarray, bounds: Sequence[tuple[float, float]], names: Sequence[str],
                   free_lower: Sequence[str], what: str) -> None:
    """Raise if a parameter ends on its box bound: the data do not determine it (except allowed lower bounds)."""
    for name in parameters_at_bounds(theta, bounds, names, free_lower)[:1]:
        value, (low, high) = theta[list(names).index(name)], bounds[list(names).index(name)]
        raise FitError(f"{what}: parameter {name} ran to its bound ({value:.4g} in [{low}, {high}]); "
                       "the data do not determine it (too flat, too few points, or wrong direction for mode)")


def bootstrap_refits(
    n_resamples: int,
    n_trials: int,
    seed: int,
    refit: Callable[[np.ndarray], np.ndarray | None],
    n_values: int,
) -> np.ndarray:
    """Run `refit(trial_indices)` on bootstrap resamples of trials; rows of NaN where a refit failed."""
    if n_resamples < 1:
        raise FitError(f"n_bootstrap must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    samples = np.full((n_resamples, n_values), np.nan)
    for i in range(n_resamples):
        values = refit(rng.integers(0, n_trials, n_trials))
        if values is not None:
            samples[i] = values
    return samples


def refit_from(best: MultiStartResult, loss_and_grad, bounds) -> np.ndarray | None:
    """One L-BFGS refit warm-started at the point estimate (bootstrap); None when it does not converge."""
    ok, theta, _ = _lbfgs(loss_and_grad, best.theta, bounds, best.loss_scale)
    return theta if ok else None


def group_codes(df: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer group code per row (allocation = all config columns) and one row of configs per group."""
    keys = df[list(columns)]
    codes, uniques = pd.MultiIndex.from_frame(keys).factorize()
    configs = cast(pd.MultiIndex, uniques).to_frame(index=False)  # factorize of a MultiIndex gives one
    configs.columns = list(columns)
    return codes.astype(np.int64), configs


def group_means(codes: np.ndarray, metric: np.ndarray, n_groups: int,
                indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean metric and trial count per group, optionally over a bootstrap resample of trial indices."""
    if indices is not None:
        codes, metric = codes[indices], metric[indices]
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    sums = np.bincount(codes, weights=metric, minlength=n_groups)
    means = np.divide(sums, counts, out=np.full(n_groups, np.nan), where=counts > 0)
    return means, counts
