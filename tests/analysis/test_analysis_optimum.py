"""Each budget's optimum located between grid points with an interval; the frontier of a fixed-budget sweep."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import FitError, fit_allocation_law, fit_frontier_law, frontier_kind, locate_optima
from analysis.synthetic import D_M_LAW_TRUTH, FRONTIER_TRUTH, frontier_truth, synthetic_sweep

BUDGETS = (1e4, 1e5, 1e6, 1e7)  # true d_m* = 4, 8, 16, 32
OFF_GRID = (2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 28.0, 40.0, 56.0, 80.0)  # none of the true optima is on it


def true_d_m(budget: float) -> float:
    return D_M_LAW_TRUTH["coefficient"] * budget ** D_M_LAW_TRUTH["exponent"]


def true_best_metric(budget: float) -> float:
    return FRONTIER_TRUTH["E"] + FRONTIER_TRUTH["A"] * budget ** -FRONTIER_TRUTH["alpha"]


@pytest.fixture(scope="module")
def off_grid_sweep():
    return synthetic_sweep(frontier_truth, noise=0.01, seeds=4, rng_seed=7, budgets=BUDGETS, d_m_values=OFF_GRID,
                           whole_neurons=True)


def test_optimum_between_grid_points_is_located_inside_its_interval(off_grid_sweep):
    optima = locate_optima(off_grid_sweep, "metric", "min", n_bootstrap=400)
    assert optima.axis == "d_m" and [o.budget for o in optima.optima] == list(BUDGETS)
    for located in optima.optima:
        truth = true_d_m(located.budget)
        assert truth not in OFF_GRID
        assert (located.method, located.edge, located.interval, located.note) == ("parabola", None, "seeds", None)
        assert located.d_m.contains(truth), (located.budget, located.d_m, truth)
        assert located.d_m.value == pytest.approx(truth, rel=0.1)
        assert located.grid_best in OFF_GRID and located.d_m.value != located.grid_best
        assert located.metric.contains(true_best_metric(located.budget))
        # N and k_e at the optimum lie between those of the grid points around it
        assert located.n_hidden.ci_low < located.n_hidden.value < located.n_hidden.ci_high
        assert located.k_e.ci_low < located.k_e.value < located.k_e.ci_high


def test_optimum_at_the_grid_edge_is_flagged_with_an_open_interval():
    trials = synthetic_sweep(frontier_truth, noise=0.01, seeds=2, budgets=(1e7,), d_m_values=(2.0, 3.0, 5.0))
    (located,) = locate_optima(trials, "metric", "min", n_bootstrap=100).optima
    assert (located.method, located.edge, located.d_m.value) == ("grid", "high", 5.0)
    assert located.note == "best at the largest d_m (5): extend the grid upwards"
    payload = json.loads(json.dumps(located.to_dict()))
    assert payload["d_m"]["ci_high"] is None and payload["n_hidden"]["ci_low"] is None  # open beyond the grid
    assert "value_samples" not in payload


def test_one_seed_per_allocation_takes_its_interval_from_the_residuals():
    trials = synthetic_sweep(frontier_truth, noise=0.005, seeds=1, budgets=(1e6,), d_m_values=OFF_GRID)
    (located,) = locate_optima(trials, "metric", "min", n_bootstrap=200).optima
    assert located.interval == "residuals" and located.d_m.contains(true_d_m(1e6))
    two = trials[trials["d_m"].isin((10.0, 14.0))]
    (too_few,) = locate_optima(two, "metric", "min", n_bootstrap=50).optima
    assert too_few.method == "grid" and "at least 3 are needed" in too_few.note


def test_fixed_budget_sweep_gets_a_per_budget_frontier_and_ingested_trials_the_pareto_one(off_grid_sweep):
    assert frontier_kind(off_grid_sweep) == "per_budget"
    assert frontier_kind(off_grid_sweep.assign(budget=np.nan)) == "pareto"
    one_per_budget = off_grid_sweep.drop_duplicates("budget")
    assert frontier_kind(one_per_budget) == "pareto"
    with pytest.raises(FitError, match=r"needs a budget on every trial; \d+ have none"):
        frontier_kind(off_grid_sweep.assign(budget=np.nan), "per_budget")


def test_frontier_law_of_a_fixed_budget_sweep_is_fitted_against_the_budget():
    """4 budgets x 8 allocations, 2 seeds, 1 % noise, each allocation a little under its budget."""
    trials = synthetic_sweep(frontier_truth, noise=0.01, seeds=2, rng_seed=3, budgets=BUDGETS,
                             d_m_values=(2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 28.0, 40.0), whole_neurons=True)
    trials = trials[trials.groupby("budget")["d_m"].transform("nunique") > 0]
    fit = fit_frontier_law(trials, "metric", "min", n_bootstrap=300)
    assert (fit.frontier, fit.cost, len(fit.frontier_cost)) == ("per_budget", "budget", 4)
    assert fit.alpha.contains(FRONTIER_TRUTH["alpha"]) and fit.alpha.value == pytest.approx(0.3, abs=0.05)
    pareto = fit_frontier_law(trials, "metric", "min", frontier="pareto", n_bootstrap=50)
    assert len(pareto.frontier_cost) > 4  # strict Pareto over exact P keeps most allocations of each budget


def test_allocation_law_from_optima_between_grid_points(off_grid_sweep):
    fit = fit_allocation_law(off_grid_sweep, "d_m", "metric", "min", n_bootstrap=300)
    assert fit.exponent.contains(D_M_LAW_TRUTH["exponent"])
    assert fit.exponent.value == pytest.approx(D_M_LAW_TRUTH["exponent"], abs=0.05)
    assert fit.left_out == []


def test_allocation_law_leaves_out_edge_budgets_and_says_why():
    trials = synthetic_sweep(frontier_truth, noise=0.01, seeds=2, budgets=BUDGETS, d_m_values=(2.0, 3.0, 5.0, 7.0))
    with pytest.raises(FitError, match=r"needs >= 3 budgets with an interior optimum, got 1; 3 have their best at"):
        fit_allocation_law(trials, "d_m", "metric", "min", n_bootstrap=50)


def test_locating_needs_budgets_and_positive_axis_values():
    with pytest.raises(FitError, match="no trial has both a budget"):
        locate_optima(pd.DataFrame({"budget": [np.nan], "d_m": [2.0], "metric": [1.0]}), "metric", "min")
    with pytest.raises(FitError, match="must be > 0"):
        locate_optima(pd.DataFrame({"budget": [1.0, 1.0], "d_m": [0.0, 2.0], "metric": [1.0, 2.0]}), "metric", "min")
