"""Sweeps and trials with known contents, shared by the resultsdb and API tests."""

from __future__ import annotations

import yaml

from analysis.synthetic import frontier_truth, synthetic_sweep
from resultsdb import ResultsStore

SWEEP = "pareto"
ALLOCATION_DEFAULTS = {"n_hidden": 64, "d_mlp": 10, "l_mlp": 1, "d_tree": 10, "d_branch": 5, "rho_rec": 0.5,
                       "k_e": 100, "k_c": 50}


def allocation(*, params_total: int, d_m: int = 5, seed: int = 0, budget: int | None = None, **overrides) -> dict:
    """A planned trial: the allocation columns (defaults above), its config the columns apart from the seed."""
    trial = {**ALLOCATION_DEFAULTS, "budget": budget, "params_total": params_total, "d_m": d_m, "seed": seed}
    trial.update(overrides)
    config = {key: value for key, value in trial.items() if key != "seed"}
    return {**trial, "config": config}


def numbered_allocation(index: int) -> dict:
    """The index-th of a family of distinct planned trials whose allocation columns vary with the index."""
    d_m = 5 * (1 + index % 4)
    return allocation(
        budget=100_000 * (1 + index % 3), params_total=99_000 + 100 * index, d_m=d_m, seed=index % 2,
        n_hidden=100 + 10 * index, d_mlp=2 * d_m, rho_rec=round(0.1 * (index % 10), 1), k_e=50 + index,
    )


def create_sweep(store: ResultsStore, name: str = SWEEP, metric: str = "bpc", mode: str = "min", trials: int = 0
                 ) -> list[str]:
    """A sweep (its metric, and accuracy: max) with `trials` pending numbered trials; returns their ids."""
    store.create_sweep(name, task="enwik8", metric=metric, mode=mode, spec_text=f"name: {name}",
                       metric_modes={"accuracy": "max"})
    return store.add_trials(name, [numbered_allocation(index) for index in range(trials)])


def add_finished(store: ResultsStore, sweep: str, results: list[tuple[dict, float]], metric: str = "bpc") -> list[str]:
    """Trials completed with `metric` as their final value; returns their ids in order."""
    trial_ids = store.add_trials(sweep, [trial for trial, _ in results])
    for trial_id, (_, value) in zip(trial_ids, results, strict=True):
        store.set_trial_status(trial_id, "completed", final={metric: value})
    return trial_ids


def seeded_budget_sweep(store: ResultsStore, name: str = "budgets") -> list[str]:
    """Two budgets x two allocations (d_m 5 and 10) x two seeds, metric bpc (min).

    Seed means: budget 1000: d_m 5 -> 2.0 (P 950), d_m 10 -> 1.5 (P 990);
                budget 2000: d_m 5 -> 1.1 (P 1900), d_m 10 -> 1.3 (P 1980).
    """
    create_sweep(store, name)
    results = []
    for budget, d_m, params_total, values in [
        (1000, 5, 950, (1.9, 2.1)),
        (1000, 10, 990, (1.4, 1.6)),
        (2000, 5, 1900, (1.0, 1.2)),
        (2000, 10, 1980, (1.3, 1.3)),
    ]:
        for seed, value in enumerate(values):
            results.append((allocation(budget=budget, d_m=d_m, params_total=params_total, seed=seed), value))
    return add_finished(store, name, results)


# Sweeps of one experiment for recorded predictions: d_m sweeps drawn from analysis.synthetic's frontier truth.

PREDICTION_BUDGETS = (10_000, 31_623, 100_000, 316_228, 1_000_000)
PREDICTION_D_M = (2, 3, 4, 6, 8, 11, 16, 23, 32)
EXPERIMENT = {"task_options": {"corpus_bytes": 40_000}, "fixed": {"d_tree": 10, "d_branch": 10},
              "training": {"steps": 1000, "lr": 0.005}}


def experiment_spec(name: str, **changes) -> str:
    """The YAML spec of a d_m sweep with EXPERIMENT's settings (`changes` replace task_options, fixed, training)."""
    settings = {**EXPERIMENT, **changes}
    spec = {"name": name, "task": "enwik8", "task_options": settings["task_options"],
            "metric": {"name": "bpc", "mode": "min"}, "budgets": list(PREDICTION_BUDGETS),
            "allocation": {"vary": {"d_m": list(PREDICTION_D_M)}, "fixed": settings["fixed"]},
            "seeds": [0, 1, 2], "training": settings["training"]}
    return yaml.safe_dump(spec, sort_keys=False)


def synthetic_trials(budgets=PREDICTION_BUDGETS, seeds: int = 3, rng_seed: int = 0, noise: float = 0.01):
    """analysis.synthetic's frontier-truth sweep with whole d_m and N (d_m*(P) = 4·(P/1e4)^0.3)."""
    return synthetic_sweep(frontier_truth, noise=noise, seeds=seeds, rng_seed=rng_seed, budgets=budgets,
                           d_m_values=PREDICTION_D_M, whole_neurons=True)


def synthetic_rows(trials) -> list[dict]:
    """The synthetic trials as planned trials (add_trials), each with its bpc under "final" (ingest_trials)."""
    rows = []
    for trial in trials.itertuples():
        d_m = int(trial.d_m)
        planned = allocation(budget=int(trial.budget), params_total=int(trial.params_total), d_m=d_m,
                             seed=int(trial.seed), n_hidden=int(trial.n_hidden), d_mlp=2 * d_m, k_e=int(trial.k_e),
                             k_c=100)
        rows.append({**planned, "final": {"bpc": float(trial.metric)}})
    return rows


def ingest_synthetic(store: ResultsStore, name: str, trials, *, task: str = "enwik8", spec_text: str | None = None
                     ) -> list[str]:
    """The sweep `name` (created with the spec, default experiment_spec(name)) with the synthetic trials completed;
    returns their ids."""
    if store.get_sweep(name) is None:
        store.create_sweep(name, task=task, metric="bpc", mode="min", spec_text=spec_text or experiment_spec(name))
    rows = [{**row, "status": "completed"} for row in synthetic_rows(trials)]
    return store.ingest_trials(name, rows, writer="tests").trial_ids
