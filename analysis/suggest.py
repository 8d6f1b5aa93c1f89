"""Next sweep from a finished one: a larger budget with a d_m grid centred on the predicted optimum."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from analysis.fitting import FitError, check_mode
from analysis.frontier import per_budget_optimum
from analysis.scaling import fit_allocation_law


def predicted_optimum(trials: pd.DataFrame, metric: str, mode: str, budget: float, axis: str = "d_m",
                      n_bootstrap: int = 200) -> float:
    """Optimal `axis` value at `budget` from its allocation law; with < 3 budgets, the best at the largest one."""
    if trials["budget"].nunique() >= 3:
        return float(fit_allocation_law(trials, axis, metric, mode, n_bootstrap=n_bootstrap).predict(budget))
    return float(per_budget_optimum(trials, metric, mode)[axis].iloc[-1])


def centred_grid(centre: float, n_values: int, spread: float) -> list[int]:
    """Integers geometrically spaced from centre/spread to centre·spread (>= 1, unique, sorted)."""
    values = np.rint(centre * spread ** np.linspace(-1.0, 1.0, n_values)).astype(int)
    return sorted({max(1, int(v)) for v in values})


def next_budget(trials: pd.DataFrame, budget: float | None = None, budget_factor: float = 3.0) -> float:
    """`budget`, or by default the largest budget of the trials times `budget_factor`, in whole parameters."""
    if trials.empty or "budget" not in trials.columns or trials["budget"].isna().all():
        raise FitError("suggest needs finished trials with a 'budget' column")
    if budget_factor <= 1 and budget is None:
        raise FitError(f"budget_factor must be > 1 to grow the budget, got {budget_factor}")
    return float(round(budget if budget is not None else trials["budget"].max() * budget_factor))


def suggest_next_sweep(
    trials: pd.DataFrame,
    base_spec: dict,
    metric: str,
    mode: str,
    budget: float | None = None,
    budget_factor: float = 3.0,
    n_values: int = 7,
    spread: float = 2.0,
    seeds: list[int] | None = None,
    name: str | None = None,
    centre: float | None = None,
) -> dict:
    """Sweep spec dict for the next sweep; task, seeds, training and allocation.fixed come from base_spec.

    The budget defaults to next_budget(trials, budget, budget_factor); the d_m grid spans centre/spread ..
    centre·spread around `centre`, by default the d_m*(P) law's prediction there (predicted_optimum).
    """
    check_mode(mode)
    for key in ("name", "task"):
        if key not in base_spec:
            raise FitError(f"base spec lacks {key!r}")
    budget = next_budget(trials, budget, budget_factor)
    centre = centre if centre is not None else predicted_optimum(trials, metric, mode, budget)
    base_allocation = base_spec.get("allocation", {})
    spec = copy.deepcopy(base_spec)  # task options, training, resources, scheduler carry over
    spec.update({
        "name": name or f"{base_spec['name']}-next-{int(budget)}",
        "metric": {"name": metric, "mode": mode},
        "budgets": [budget],
        "allocation": {"vary": {"d_m": centred_grid(centre, n_values, spread)},
                       "fixed": copy.deepcopy(base_allocation.get("fixed", {})), "skip_infeasible": True},
        "seeds": list(seeds if seeds is not None else base_spec.get("seeds", [0])),
    })
    spec.pop("description", None)
    return spec
