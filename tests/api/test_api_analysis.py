"""Frontier, per-budget optimum and frontier-law fit over HTTP, on sweeps whose answers are known."""

from __future__ import annotations

import pytest
from apitesting import API
from store_helpers import add_finished, allocation, create_sweep, seeded_budget_sweep


def test_frontier_of_a_fixed_budget_sweep_is_each_budgets_best(client, store):
    seeded_budget_sweep(store)
    answer = client.get(f"{API}/sweeps/budgets/frontier").json()
    assert (answer["metric"], answer["mode"], answer["kind"], answer["cost"]) == ("bpc", "min", "per_budget", "budget")
    points = [(point["budget"], point["d_m"], point["value"], point["n_seeds"]) for point in answer["points"]]
    assert points == [(1000, 10, pytest.approx(1.5), 2), (2000, 5, pytest.approx(1.1), 2)]
    assert answer["points"][1]["value_std"] == pytest.approx(0.1414, abs=1e-4)


def test_strict_pareto_frontier_of_seed_means_on_request(client, store):
    seeded_budget_sweep(store)
    answer = client.get(f"{API}/sweeps/budgets/frontier?kind=pareto").json()
    assert (answer["kind"], answer["cost"]) == ("pareto", "params_total")
    points = [(point["params_total"], point["value"], point["n_seeds"]) for point in answer["points"]]
    assert points == [(950, pytest.approx(2.0), 2), (990, pytest.approx(1.5), 2), (1900, pytest.approx(1.1), 2)]
    assert answer["points"][0]["value_std"] == pytest.approx(0.1414, abs=1e-4)


def test_frontier_per_trial_and_along_another_cost(client, store):
    seeded_budget_sweep(store)
    per_trial = client.get(f"{API}/sweeps/budgets/frontier?aggregate_seeds=false").json()["points"]
    assert [(point["params_total"], point["value"], point["seed"]) for point in per_trial] == [
        (950, 1.9, 0), (990, 1.4, 0), (1900, 1.0, 0)
    ]
    assert all(point["id"] for point in per_trial)
    by_budget = client.get(f"{API}/sweeps/budgets/frontier?kind=pareto&cost=budget").json()["points"]
    assert [(point["budget"], point["d_m"]) for point in by_budget] == [(1000, 10), (2000, 5)]


def test_frontier_of_a_higher_is_better_metric(client, store):
    create_sweep(store, "accuracy", metric="acc", mode="max")
    add_finished(store, "accuracy", [
        (allocation(params_total=100), 0.5), (allocation(params_total=200), 0.4), (allocation(params_total=300), 0.8)
    ], metric="acc")
    points = client.get(f"{API}/sweeps/accuracy/frontier").json()["points"]
    assert [(point["params_total"], point["value"]) for point in points] == [(100, 0.5), (300, 0.8)]


def test_optimum_per_budget_with_seeds_and_runner_up(client, store):
    seeded_budget_sweep(store)
    budgets = client.get(f"{API}/sweeps/budgets/optimum").json()["budgets"]
    assert [entry["budget"] for entry in budgets] == [1000, 2000]
    first, second = budgets
    assert (first["best"]["d_m"], first["best"]["value"], first["best"]["n_seeds"]) == (10, pytest.approx(1.5), 2)
    assert (first["runner_up"]["d_m"], first["runner_up"]["value"]) == (5, pytest.approx(2.0))
    assert first["gap"] == pytest.approx(0.5) and first["n_allocations"] == 2
    assert (second["best"]["d_m"], second["best"]["value"]) == (5, pytest.approx(1.1))
    assert second["best"]["value_std"] == pytest.approx(0.1414, abs=1e-4)
    per_seed = client.get(f"{API}/sweeps/budgets/optimum?aggregate_seeds=false").json()["budgets"]
    assert (per_seed[1]["best"]["d_m"], per_seed[1]["best"]["value"]) == (5, 1.0)


def test_analysis_of_a_sweep_without_results_is_empty_and_unknown_metrics_are_422(client, store):
    create_sweep(store, "fresh")
    store.add_trials("fresh", [allocation(params_total=100, budget=100)])
    assert client.get(f"{API}/sweeps/fresh/frontier").json()["points"] == []
    assert client.get(f"{API}/sweeps/fresh/optimum").json()["budgets"] == []
    answer = client.get(f"{API}/sweeps/fresh/frontier?metric=bogus")
    assert answer.status_code == 422 and "bogus" in answer.json()["detail"]
    assert client.get(f"{API}/sweeps/fresh/frontier?cost=colour").status_code == 422


def test_frontier_follows_new_results(client, store):
    seeded_budget_sweep(store)
    assert len(client.get(f"{API}/sweeps/budgets/frontier").json()["points"]) == 2
    add_finished(store, "budgets", [(allocation(params_total=500, budget=500), 0.5)])
    points = client.get(f"{API}/sweeps/budgets/frontier").json()["points"]
    assert [(point["budget"], point["value"]) for point in points] == [(500, 0.5), (1000, 1.5), (2000, 1.1)]
    pareto = client.get(f"{API}/sweeps/budgets/frontier?kind=pareto").json()["points"]
    assert [(point["params_total"], point["value"]) for point in pareto] == [(500, 0.5)]


def test_frontier_law_of_ingested_trials_recovers_a_known_law(client, store):
    create_sweep(store, "law")
    costs = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6]
    add_finished(store, "law", [(allocation(params_total=int(c), budget=int(c)), 1.0 + 50.0 * c**-0.5) for c in costs])
    fit = client.get(f"{API}/sweeps/law/laws/frontier?n_bootstrap=50").json()
    assert fit["fitted_on"] == "the Pareto frontier over params_total"  # one allocation per budget: strict Pareto
    assert fit["parameters"]["alpha"]["value"] == pytest.approx(0.5, rel=0.02)
    assert fit["parameters"]["E"]["value"] == pytest.approx(1.0, rel=0.02)
    assert fit["quality"]["r_squared"] > 0.99 and fit["formula"] == "bpc = E + A·params_total^(−alpha)"


def test_a_law_that_cannot_be_fitted_is_422_saying_what_the_data_lack(client, store):
    seeded_budget_sweep(store)
    answer = client.get(f"{API}/sweeps/budgets/laws/frontier?n_bootstrap=50")
    assert answer.status_code == 422
    assert answer.json()["detail"] == "the frontier law of 'bpc' (3 parameters) needs at least 4 budgets, got 2"
    everything = client.get(f"{API}/sweeps/budgets/laws?n_bootstrap=50").json()
    assert everything["laws"] == [] and set(everything["refused"]) == {"frontier", "allocation", "surface", "tradeoff"}
    assert client.get(f"{API}/sweeps/budgets/laws/colour").status_code == 422
    assert client.get(f"{API}/sweeps/budgets/laws/frontier?budget=-1").status_code == 422
