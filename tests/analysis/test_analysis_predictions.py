"""Predictions to record: fitted on the budgets below the one predicted, and scored against trials run there."""

import numpy as np
import pandas as pd
import pytest

from analysis import Estimate, FitError, predict_optimum, score_prediction
from analysis.synthetic import BUDGETS, D_M_LAW_TRUTH, frontier_truth, synthetic_sweep

PREDICTED = BUDGETS[-1]


@pytest.fixture(scope="module")
def trials():
    return synthetic_sweep(frontier_truth, noise=0.01, seeds=3, rng_seed=5)


def best_d_m(budget: float) -> float:
    return D_M_LAW_TRUTH["coefficient"] * budget ** D_M_LAW_TRUTH["exponent"]


def test_a_prediction_is_fitted_on_the_budgets_below_it_only(trials):
    predicted = predict_optimum(trials, "metric", "min", PREDICTED, n_bootstrap=100)
    without_it = predict_optimum(trials[trials["budget"] < PREDICTED], "metric", "min", PREDICTED, n_bootstrap=100)

    assert predicted.to_dict() == without_it.to_dict()
    assert predicted.budgets == list(BUDGETS[:-1]) and predicted.n_trials == (trials["budget"] < PREDICTED).sum()
    assert predicted.law == "allocation+frontier" and predicted.n_bootstrap == 100
    assert predicted.d_m.value == pytest.approx(best_d_m(PREDICTED), rel=0.05)
    for name in ("d_m", "n_hidden", "k_e", "metric"):
        estimate = getattr(predicted, name)
        assert estimate.ci_low < estimate.value < estimate.ci_high
    assert len(predicted.snapshot_hash) == 64


def test_the_snapshot_hash_names_the_data_fitted_on(trials):
    first = predict_optimum(trials, "metric", "min", PREDICTED, n_bootstrap=50)
    changed = trials.copy()
    changed.loc[changed.index[0], "metric"] *= 1.01
    assert predict_optimum(changed, "metric", "min", PREDICTED, n_bootstrap=50).snapshot_hash != first.snapshot_hash
    above = trials.assign(metric=np.where(trials["budget"] == PREDICTED, 9.0, trials["metric"]))
    assert predict_optimum(above, "metric", "min", PREDICTED, n_bootstrap=50).snapshot_hash == first.snapshot_hash


def test_auto_takes_the_surface_law_where_the_allocation_laws_have_too_few_budgets(trials):
    two_budgets = trials[trials["budget"] <= BUDGETS[1]]
    with pytest.raises(FitError, match="needs >= 3 budgets"):
        predict_optimum(two_budgets, "metric", "min", BUDGETS[3], law="allocation", n_bootstrap=50)

    predicted = predict_optimum(two_budgets, "metric", "min", BUDGETS[3], n_bootstrap=50)

    assert predicted.law in ("surface", "tradeoff") and predicted.budgets == list(BUDGETS[:2])


def test_no_prediction_without_trials_below_the_budget_or_with_an_unknown_law(trials):
    with pytest.raises(FitError, match="nothing to predict from"):
        predict_optimum(trials, "metric", "min", BUDGETS[0])
    with pytest.raises(FitError, match="law must be auto or one of allocation, surface, tradeoff"):
        predict_optimum(trials, "metric", "min", PREDICTED, law="frontier")


def observed_at(d_m_values, best: float, seeds: int = 2, mode: str = "min") -> pd.DataFrame:
    """One budget's trials: metric 1 + 0.1·ln²(d_m/best) (its max mirrored), a little seed noise."""
    d_m, seed = (a.ravel() for a in np.meshgrid(np.asarray(d_m_values, dtype=float), np.arange(seeds)))
    metric = 1 + 0.1 * np.log(d_m / best) ** 2 + 1e-3 * (seed - 0.5)
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(d_m))], "budget": 1e6, "d_m": d_m,
                         "n_hidden": 1e5 / d_m, "k_e": 20 * d_m, "k_c": 100.0, "seed": seed,
                         "metric": metric if mode == "min" else 3 - metric})


def test_a_prediction_inside_the_observed_optimum_scores_no_regret():
    observed = observed_at([2, 4, 8, 16, 32], best=8)
    score = score_prediction("min", Estimate(9.0, 6.0, 11.0), Estimate(1.02, 0.99, 1.05), observed)

    assert score["d_m_inside"] and score["metric_inside"]
    assert score["observed"]["d_m"]["value"] == pytest.approx(8, rel=0.02)
    assert score["observed"]["method"] == "parabola" and score["observed"]["edge"] is None
    assert (score["observed"]["nearest_d_m"], score["observed"]["best_d_m"], score["regret"]) == (8, 8, 0)
    assert score["metric_error"] == pytest.approx(1.02 - score["observed"]["metric"]["value"])
    assert score["observed"]["n_trials"] == 10 and score["observed"]["n_allocations"] == 5


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_prediction_off_the_optimum_is_outside_and_its_regret_is_the_metric_lost(mode):
    observed = observed_at([2, 4, 8, 16, 32], best=8, mode=mode)
    score = score_prediction(mode, Estimate(20.0, 16.5, 24.0), Estimate(2.5, 2.4, 2.6), observed)

    assert not score["d_m_inside"] and not score["metric_inside"]
    assert score["observed"]["nearest_d_m"] == 16
    assert score["regret"] == pytest.approx(0.1 * np.log(2) ** 2)  # seeds averaged: the noise cancels
    assert score["regret"] > 0


def test_scoring_is_deterministic_and_needs_three_allocations():
    observed = observed_at([2, 4, 8, 16, 32], best=8)
    args = ("min", Estimate(9.0, 6.0, 11.0), Estimate(1.02, 0.99, 1.05))
    assert score_prediction(*args, observed) == score_prediction(*args, observed.sample(frac=1, random_state=1))
    assert score_prediction(*args, observed_at([4, 8], best=8)) is None


def test_an_optimum_at_the_grids_edge_is_flagged_with_its_interval_open():
    score = score_prediction("min", Estimate(40.0, 30.0, 60.0), Estimate(1.0, 0.9, 1.1),
                             observed_at([2, 4, 8, 16], best=40))
    assert score["observed"]["edge"] == "high" and score["observed"]["d_m"]["ci_high"] is None
    assert score["observed"]["d_m"]["value"] == 16 and not score["d_m_inside"]
