"""Pareto frontier against brute force, seed aggregation, and the per-budget optimum."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import FitError, aggregate_seeds, pareto_frontier, per_budget_optimum


def brute_force_frontier(cost, metric, mode):
    """O(n²) reference: indices not dominated by any other point."""
    key = metric if mode == "min" else -metric
    keep = []
    for i in range(len(cost)):
        dominated = any(cost[j] <= cost[i] and key[j] <= key[i] and (cost[j] < cost[i] or key[j] < key[i])
                        for j in range(len(cost)))
        if not dominated:
            keep.append(i)
    return sorted(keep)


# small integer values force many exact ties in cost and in metric
values = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(points=values, mode=st.sampled_from(["min", "max"]))
def test_frontier_matches_brute_force_with_ties(points, mode):
    df = pd.DataFrame(points, columns=["params_total", "loss"], dtype=float)
    front = pareto_frontier(df, metric="loss", mode=mode)
    assert sorted(front.index) == brute_force_frontier(df["params_total"].to_numpy(), df["loss"].to_numpy(), mode)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 200), mode=st.sampled_from(["min", "max"]))
def test_frontier_matches_brute_force_on_continuous_data(seed, n, mode):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"params_total": rng.lognormal(10, 2, n), "acc": rng.random(n)})
    front = pareto_frontier(df, metric="acc", mode=mode)
    assert sorted(front.index) == brute_force_frontier(df["params_total"].to_numpy(), df["acc"].to_numpy(), mode)
    assert front["params_total"].is_monotonic_increasing


def test_frontier_skips_failed_trials_with_nan_metric():
    df = pd.DataFrame({"params_total": [1.0, 2.0, 3.0], "loss": [5.0, np.nan, 1.0]})
    assert list(pareto_frontier(df, metric="loss", mode="min").index) == [0, 2]


def test_unknown_mode_is_rejected_with_its_value():
    df = pd.DataFrame({"params_total": [1.0], "loss": [1.0]})
    with pytest.raises(FitError, match="'best'"):
        pareto_frontier(df, metric="loss", mode="best")


def sweep_table():
    rows = []
    for budget, best_d_m in ((1e5, 10), (1e6, 20)):
        for d_m in (5, 10, 20):
            for seed in (0, 1, 2):
                loss = 1.0 + abs(d_m - best_d_m) / 10 + 0.01 * seed - (0.1 if budget == 1e6 else 0.0)
                rows.append({"trial_id": f"{budget}-{d_m}-{seed}", "budget": budget, "d_m": d_m,
                             "n_hidden": int(budget / (d_m * 10)), "params_total": budget * 0.99, "seed": seed,
                             "loss": loss})
    return pd.DataFrame(rows)


def test_aggregate_seeds_gives_mean_std_and_count_per_allocation():
    table = aggregate_seeds(sweep_table(), "loss")
    assert len(table) == 6
    row = table[(table.budget == 1e5) & (table.d_m == 10)].iloc[0]
    assert row["loss"] == pytest.approx(1.01)
    assert row["loss_std"] == pytest.approx(0.01)
    assert row["n_seeds"] == 3
    assert "seed" not in table.columns


def test_per_budget_optimum_names_best_and_runner_up():
    optima = per_budget_optimum(sweep_table(), "loss", "min")
    assert list(optima["budget"]) == [1e5, 1e6]
    assert list(optima["d_m"]) == [10, 20]
    assert optima["gap"].iloc[0] == pytest.approx(0.5)
    assert optima["runner_up_d_m"].iloc[0] == 5
    worst = per_budget_optimum(sweep_table(), "loss", "max")
    assert list(worst["d_m"]) == [20, 5]


def test_per_budget_optimum_without_aggregation_picks_single_trials():
    optima = per_budget_optimum(sweep_table(), "loss", "min", aggregate_seeds=False)
    assert list(optima["seed"]) == [0, 0]
    assert list(optima["n_allocations"]) == [9, 9]


def test_snapshot_hash_accepts_missing_values_and_ignores_row_order():
    import pandas as pd

    from analysis.fitting import snapshot_hash

    frame = pd.DataFrame({"budget": [None, 1e5, 2e5], "metric": [1.5, 1.2, float("nan")]})
    assert snapshot_hash(frame, ["budget", "metric"]) == snapshot_hash(frame.iloc[::-1], ["budget", "metric"])
    assert snapshot_hash(frame, ["budget", "metric"]) != snapshot_hash(frame.fillna(0), ["budget", "metric"])
