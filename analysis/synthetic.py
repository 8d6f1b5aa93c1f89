"""Synthetic sweeps drawn from each model with known parameters, for tests and benchmarks/fit_speed.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.tradeoff import TRADEOFF_PARAMS, tradeoff_metric

K_C = 100  # d_tree = d_branch = 10
BUDGETS = tuple(1e4 * 10 ** (i / 2) for i in range(7))  # half-decades, 1e4 .. 1e7
# 2 .. 128, ×√2 apart; not integers, so that every budget's optimal d_m lies exactly on the grid
D_M_VALUES = tuple(4 * 2 ** (j / 2) for j in range(-2, 11))

FRONTIER_TRUTH = {"E": 0.9, "A": 40.0, "alpha": 0.3}
# d_m*(P) = 4·(P/1e4)^log10(2) doubles every decade.
D_M_LAW_TRUTH = {"coefficient": 4.0 * 1e4 ** -np.log10(2), "exponent": float(np.log10(2))}
SURFACE_TRUTH = {"E": 0.8, "A": 30.0, "a": 0.5, "B": 12.0, "b": 0.6}
TRADEOFF_TRUTH = {"s_floor": 0.05, "s0": 20.0, "gamma": 0.7, "rho0": 2e-3, "delta": 0.0, "m0": 2.0, "m1": 2e-3}

Truth = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (P, N, k_e, d_m) -> metric


def k_e_of(d_m, d_tree: int = 10) -> np.ndarray:
    """Per-neuron complexity of an ELM neuron with l_mlp = 1, d_mlp = 2·d_m (DESIGN §2)."""
    d_m = np.asarray(d_m, dtype=float)
    d_mlp = 2 * d_m
    return (d_tree + d_m) * d_mlp + d_mlp + d_mlp * d_m + 2 * d_m + 1


def cost_model(n_hidden: float, k_e: float) -> float:
    """P(N, k_e) of the synthetic sweeps (hidden layer only)."""
    return n_hidden * (K_C + k_e)


def synthetic_sweep(truth: Truth, noise: float, seeds: int, rng_seed: int = 0,
                    budgets: Sequence[float] = BUDGETS, d_m_values: Sequence[float] = D_M_VALUES,
                    whole_neurons: bool = False) -> pd.DataFrame:
    """Trials over budgets × d_m × seeds with metric = truth·(1 + noise·ε), ε standard normal.

    N is continuous so that every allocation of a budget costs exactly the budget, or with `whole_neurons`
    the largest integer within it (as the budget solver lands each allocation a little under its budget);
    allocations with N < 4 are left out.
    """
    budget, d_m, seed = (a.ravel() for a in np.meshgrid(budgets, d_m_values, np.arange(seeds), indexing="ij"))
    k_e = k_e_of(d_m)
    n_hidden = budget / (K_C + k_e)
    if whole_neurons:
        n_hidden = np.floor(n_hidden)
    keep = n_hidden >= 4
    budget, d_m, seed, k_e, n_hidden = budget[keep], d_m[keep], seed[keep], k_e[keep], n_hidden[keep]
    rng = np.random.default_rng(rng_seed)
    metric = truth(budget, n_hidden, k_e, d_m) * (1 + noise * rng.standard_normal(len(budget)))
    return pd.DataFrame({
        "trial_id": [f"syn-{b:.0f}-{m:.4f}-{s}" for b, m, s in zip(budget, d_m, seed)],
        "budget": budget, "n_hidden": n_hidden, "d_m": d_m, "k_e": k_e, "k_c": float(K_C),
        "params_total": n_hidden * (K_C + k_e), "seed": seed.astype(int), "metric": metric,
    })


def frontier_truth(P, n_hidden, k_e, d_m) -> np.ndarray:
    """Frontier law at P, worsened by 0.5·log²(d_m / d_m*(P)) away from the optimal d_m."""
    best_d_m = D_M_LAW_TRUTH["coefficient"] * P ** D_M_LAW_TRUTH["exponent"]
    law = FRONTIER_TRUTH["E"] + FRONTIER_TRUTH["A"] * P ** -FRONTIER_TRUTH["alpha"]
    return law * (1 + 0.5 * np.log(d_m / best_d_m) ** 2)


def surface_truth(P, n_hidden, k_e, d_m) -> np.ndarray:
    t = SURFACE_TRUTH
    return t["E"] + t["A"] * n_hidden ** -t["a"] + t["B"] * k_e ** -t["b"]


def tradeoff_truth(P, n_hidden, k_e, d_m) -> np.ndarray:
    params = np.array([[TRADEOFF_TRUTH[name] for name in TRADEOFF_PARAMS]])
    return tradeoff_metric(params, n_hidden, k_e, np.full_like(k_e, K_C), "min")[0]
