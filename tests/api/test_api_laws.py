"""Every law over HTTP, on fixed-budget sweeps drawn from known laws and stored like orchestrated ones."""

from __future__ import annotations

import pytest
from apitesting import API
from store_helpers import add_finished, allocation, create_sweep

from analysis.synthetic import (
    D_M_LAW_TRUTH,
    FRONTIER_TRUTH,
    K_C,
    SURFACE_TRUTH,
    TRADEOFF_TRUTH,
    frontier_truth,
    surface_truth,
    synthetic_sweep,
    tradeoff_truth,
)

BUDGETS = (1e4, 1e5, 1e6, 1e7)
D_M_GRID = (2, 3, 5, 7, 10, 14, 20, 28, 40, 56, 80)  # integers: the true d_m* 4, 8, 16, 32 fall between them


def store_synthetic(store, name: str, truth, noise: float = 0.01, seeds: int = 3, rng_seed: int = 7) -> None:
    """A fixed-budget sweep: 4 budgets x 11 d_m x `seeds`, each allocation a little under its budget."""
    trials = synthetic_sweep(truth, noise=noise, seeds=seeds, rng_seed=rng_seed, budgets=BUDGETS,
                             d_m_values=[float(d) for d in D_M_GRID], whole_neurons=True)
    create_sweep(store, name)
    add_finished(store, name, [
        (allocation(budget=int(t.budget), params_total=int(t.params_total), n_hidden=int(t.n_hidden), d_m=int(t.d_m),
                    d_mlp=2 * int(t.d_m), d_tree=10, d_branch=10, k_e=int(t.k_e), k_c=K_C, seed=int(t.seed)), t.metric)
        for t in trials.itertuples()
    ])


def assert_recovered(parameters: dict, truth: dict, names) -> None:
    for name in names:
        estimate = parameters[name]
        assert estimate["ci_low"] <= truth[name] <= estimate["ci_high"], (name, estimate, truth[name])
        assert estimate["value"] == pytest.approx(truth[name], abs=0.05), name


def test_frontier_and_allocation_laws_and_located_optima_of_a_known_sweep(client, store):
    store_synthetic(store, "known", frontier_truth)
    answer = client.get(f"{API}/sweeps/known/laws?n_bootstrap=200&budget=3e7").json()
    laws = {law["law"]: law for law in answer["laws"]}
    assert set(laws) == {"frontier", "allocation", "surface", "tradeoff"}, answer["refused"]
    frontier = laws["frontier"]
    assert frontier["fitted_on"].startswith("each budget's located optimum")
    assert frontier["formula"] == "bpc = E + A·budget^(−alpha)"
    assert_recovered(frontier["parameters"], FRONTIER_TRUTH, ["alpha"])
    allocation_law = laws["allocation"]
    assert_recovered({"d_m.exponent": allocation_law["parameters"]["d_m.exponent"]},
                     {"d_m.exponent": D_M_LAW_TRUTH["exponent"]}, ["d_m.exponent"])
    predicted_d_m = allocation_law["prediction"]["d_m"]
    true_d_m = D_M_LAW_TRUTH["coefficient"] * 3e7 ** D_M_LAW_TRUTH["exponent"]
    assert predicted_d_m["ci_low"] <= true_d_m <= predicted_d_m["ci_high"]
    assert [curve["y"] for curve in allocation_law["curves"]] == ["n_hidden", "k_e", "d_m"]
    for entry in client.get(f"{API}/sweeps/known/optimum?n_bootstrap=200").json()["budgets"]:
        located = entry["located"]
        true_optimum = D_M_LAW_TRUTH["coefficient"] * entry["budget"] ** D_M_LAW_TRUTH["exponent"]
        assert true_optimum not in D_M_GRID and located["method"] == "parabola"
        assert located["d_m"]["ci_low"] <= true_optimum <= located["d_m"]["ci_high"]


@pytest.mark.parametrize(("truth", "law", "expected", "names"), [
    (surface_truth, "surface", SURFACE_TRUTH, ["a", "b"]),
    (tradeoff_truth, "tradeoff", TRADEOFF_TRUTH, ["gamma"]),
], ids=["surface", "tradeoff"])
def test_surface_and_tradeoff_laws_recover_their_exponents(client, store, truth, law, expected, names):
    store_synthetic(store, law, truth, noise=0.005)
    fit = client.get(f"{API}/sweeps/{law}/laws/{law}?n_bootstrap=200&budget=3e7").json()
    assert_recovered(fit["parameters"], expected, names)
    assert {curve["budget"] for curve in fit["curves"]} == set(BUDGETS)
    assert fit["prediction"]["interior"] and fit["prediction"]["d_m"]["value"] > 0


def test_an_edge_optimum_is_flagged_and_left_out_of_the_allocation_law(client, store):
    create_sweep(store, "edge")
    add_finished(store, "edge", [
        (allocation(budget=budget, params_total=budget - 10, d_m=d_m, seed=seed), 2.0 - 0.1 * d_m + 0.01 * seed)
        for budget in (1000, 2000) for d_m in (2, 4, 8) for seed in (0, 1)
    ])
    budgets = client.get(f"{API}/sweeps/edge/optimum?n_bootstrap=50").json()["budgets"]
    for entry in budgets:
        located = entry["located"]
        assert (located["edge"], located["method"], located["d_m"]["value"]) == ("high", "grid", 8)
        assert located["note"] == "best at the largest d_m (8): extend the grid upwards"
        assert located["d_m"]["ci_high"] is None
    refused = client.get(f"{API}/sweeps/edge/laws?n_bootstrap=50").json()["refused"]
    assert refused["allocation"].endswith("got 0; 2 have their best at the grid's edge")
