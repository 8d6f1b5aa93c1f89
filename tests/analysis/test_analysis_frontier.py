"""Pareto frontier against brute force, seed aggregation, and the per-budget optimum."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import FitError, aggregate_seeds, frontier, frontier_kind, pareto_frontier, per_budget_optimum
from analysis.frontier import config_columns_of


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


def fixed_budget_table(budgets=(1000, 1000, 2000, 2000), d_m=(2, 4, 2, 4), seeds=(0, 0, 0, 0),
                       metric=(2.0, 1.5, 1.2, 1.4)) -> pd.DataFrame:
    return pd.DataFrame({"budget": budgets, "d_m": d_m, "params_total": [b - 10 * d for b, d in zip(budgets, d_m)],
                         "seed": seeds, "metric": metric})


def test_frontier_kind_chooses_per_budget_only_where_a_budget_holds_two_allocations():
    table = fixed_budget_table()
    assert frontier_kind(table) == "per_budget"
    one_each = fixed_budget_table(budgets=(1000, 2000, 3000, 4000))
    assert frontier_kind(one_each) == "pareto"
    two_seeds_one_allocation = fixed_budget_table(d_m=(2, 2, 4, 4), seeds=(0, 1, 0, 1))
    assert frontier_kind(two_seeds_one_allocation) == "pareto"  # seeds are not allocations
    assert frontier_kind(table.assign(budget=[1000, None, 2000, 2000])) == "pareto"
    assert frontier_kind(table.drop(columns="budget")) == "pareto"
    assert frontier_kind(table.iloc[:0]) == "pareto"
    assert frontier_kind(table, "pareto") == "pareto"


def test_frontier_kind_refuses_what_cannot_be_drawn():
    with pytest.raises(FitError, match="frontier must be one of auto, per_budget, pareto, got 'best'"):
        frontier_kind(fixed_budget_table(), "best")
    with pytest.raises(FitError, match="needs a budget on every trial; 1 have none"):
        frontier_kind(fixed_budget_table().assign(budget=[1000, None, 2000, 2000]), "per_budget")
    with pytest.raises(FitError, match="needs a budget on every trial; 4 have none"):
        frontier_kind(fixed_budget_table().drop(columns="budget"), "per_budget")


# seed means of the table below: d_m 2 -> 2.1, d_m 4 -> 1.6 at budget 1000; d_m 2 -> 1.1, d_m 4 -> 1.5 at 2000
@pytest.mark.parametrize("mode, means, d_m", [("min", [1.6, 1.1], [4, 2]), ("max", [2.1, 1.5], [2, 4])])
def test_per_budget_frontier_is_each_budgets_seed_averaged_best(mode, means, d_m):
    table = pd.concat([fixed_budget_table(), fixed_budget_table(seeds=(1, 1, 1, 1), metric=(2.2, 1.7, 1.0, 1.6))])
    kind, rows = frontier(table, "metric", mode)
    assert kind == "per_budget"
    assert list(rows["budget"]) == [1000, 2000] and list(rows["d_m"]) == d_m
    assert list(rows["metric"]) == pytest.approx(means)
    assert list(rows["n_seeds"]) == [2, 2]
    kind, rows = frontier(table, "metric", mode, kind="pareto")
    assert kind == "pareto" and list(rows["params_total"]) == sorted(rows["params_total"])


def test_config_columns_are_the_allocation_without_the_seed():
    table = fixed_budget_table()
    assert config_columns_of(table) == ["budget", "d_m", "params_total"]
    assert config_columns_of(table, ["d_m", "seed"]) == ["d_m"]
    with pytest.raises(FitError):
        config_columns_of(table, ["d_m", "k_e"])
    with pytest.raises(FitError, match="trials have none of the config columns"):
        config_columns_of(table[["seed", "metric"]])


def test_explicit_config_columns_decide_what_one_allocation_is():
    # two seeds of one d_m whose solved P differ (as after a solver change): by default two allocations, with
    # config_columns ["budget", "d_m"] one, averaged
    table = fixed_budget_table(budgets=(1000, 1000, 1000), d_m=(2, 2, 4), seeds=(0, 1, 0), metric=(1.0, 2.0, 1.6))
    table.loc[1, "params_total"] = 975
    kind, default = frontier(table, "metric", "min", kind="per_budget")
    assert default["metric"].tolist() == [1.0]
    kind, merged = frontier(table, "metric", "min", kind="per_budget", config_columns=["budget", "d_m"])
    assert merged["metric"].tolist() == [1.5] and merged["n_seeds"].tolist() == [2]
    assert per_budget_optimum(table, "metric", "min", config_columns=["budget", "d_m"])["metric"].tolist() == [1.5]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_pareto_frontier_asked_for_is_the_strict_pareto_set_of_the_seed_means(mode):
    table = fixed_budget_table(budgets=(1000, 1000, 2000, 2000), metric=(2.0, 1.5, 1.2, 1.4))
    kind, rows = frontier(table, "metric", mode, kind="pareto")
    expected = pareto_frontier(aggregate_seeds(table, "metric"), "params_total", "metric", mode)
    assert kind == "pareto"
    assert rows["params_total"].tolist() == expected["params_total"].tolist()
    assert len(rows) == {"min": 3, "max": 2}[mode]


def test_the_frontier_table_has_one_clean_row_per_budget():
    kind, rows = frontier(fixed_budget_table(), "metric", "min")
    assert list(rows.index) == [0, 1]
    assert set(rows.columns) == {"budget", "d_m", "params_total", "metric", "metric_std", "n_seeds"}


def test_seed_means_keep_allocations_without_a_budget_and_come_sorted():
    table = fixed_budget_table(budgets=(2000, 1, 1000, 1000), d_m=(2, 2, 4, 2), metric=(1.0, 2.0, 3.0, 4.0))
    table["budget"] = [2000, None, 1000, 1000]  # an ingested trial without a budget
    means = aggregate_seeds(table, "metric")
    assert means["metric"].tolist() == [4.0, 3.0, 1.0, 2.0]  # budget 1000 (d_m 2, 4), 2000, then no budget
    with pytest.raises(FitError, match="no trials with a finite 'metric'"):
        per_budget_optimum(table.assign(metric=float("nan")), "metric", "min")
