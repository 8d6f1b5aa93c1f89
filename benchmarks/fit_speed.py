"""Fit times on 1,000 synthetic trials with 1,000 bootstrap resamples, and recovered-vs-true parameters.

Every law goes through the fixed-budget path a sweep takes: each budget's optimum located between grid points
(analysis.optimum), the frontier and allocation laws fitted against the budget. The last table puts each
located optimum beside the true one (the synthetic frontier law's d_m*(P) is known in closed form).

Run: .venv/bin/python benchmarks/fit_speed.py [--bootstrap 1000] [--seeds 12]
"""

from __future__ import annotations

import argparse
import time

from analysis import (
    fit_allocation_law,
    fit_frontier_law,
    fit_surface,
    fit_tradeoff,
    locate_optima,
    predict_allocation,
)
from analysis.synthetic import (
    D_M_LAW_TRUTH,
    D_M_VALUES,
    FRONTIER_TRUTH,
    SURFACE_TRUTH,
    TRADEOFF_TRUTH,
    cost_model,
    frontier_truth,
    surface_truth,
    synthetic_sweep,
    tradeoff_truth,
)

NOISE = {"frontier": 0.01, "surface": 0.01, "tradeoff": 0.005}


def timed(fit, *args, **kwargs):
    """Result, wall seconds, and CPU seconds of this process (the figure to compare on a shared machine)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fit(*args, **kwargs)
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=12, help="seeds per allocation (12 gives ~1,000 trials)")
    args = parser.parse_args()

    # The grid shifted by 2^(1/4): every budget's true optimum falls halfway between two grid points.
    frontier_trials = synthetic_sweep(frontier_truth, NOISE["frontier"], args.seeds, rng_seed=1,
                                      d_m_values=[v * 2**0.25 for v in D_M_VALUES], whole_neurons=True)
    surface_trials = synthetic_sweep(surface_truth, NOISE["surface"], args.seeds, rng_seed=2)
    tradeoff_trials = synthetic_sweep(tradeoff_truth, NOISE["tradeoff"], args.seeds, rng_seed=3)
    common = {"metric": "metric", "mode": "min", "n_bootstrap": args.bootstrap}
    optima, wall, cpu = timed(locate_optima, frontier_trials, **common)
    print(f"{'located optima':<24} {len(frontier_trials):>6} {len(optima.optima):>7} budgets {wall:>8.2f} {cpu:>8.2f}")
    runs = [
        ("frontier law", FRONTIER_TRUTH, frontier_trials, fit_frontier_law, {"optima": optima}),
        ("allocation law d_m*(P)", D_M_LAW_TRUTH, frontier_trials, fit_allocation_law,
         {"column": "d_m", "optima": optima}),
        ("surface", SURFACE_TRUTH, surface_trials, fit_surface, {}),
        ("tradeoff model", TRADEOFF_TRUTH, tradeoff_trials, fit_tradeoff, {}),
    ]
    print(f"{'fit':<24} {'trials':>6} {'bootstrap ok':>13} {'wall s':>8} {'CPU s':>8}")
    results = []
    for label, truth, trials, fit, extra in runs:
        result, wall, cpu = timed(fit, trials, **extra, **common)
        results.append((label, truth, result))
        print(f"{label:<24} {len(trials):>6} {result.n_bootstrap_ok:>7}/{result.n_bootstrap:<5} "
              f"{wall:>8.2f} {cpu:>8.2f}")

    print(f"\n{'fit':<24} {'param':<12} {'true':>11} {'fitted':>11} {'95% CI':>25} {'in CI':>6}")
    for label, truth, result in results:
        for name, true_value in truth.items():
            est = getattr(result, name)
            print(f"{label:<24} {name:<12} {true_value:>11.5g} {est.value:>11.5g} "
                  f"{f'[{est.ci_low:.5g}, {est.ci_high:.5g}]':>25} {'yes' if est.contains(true_value) else 'NO':>6}")

    surface = results[2][2]
    prediction, wall, _ = timed(predict_allocation, surface, 3e7, cost_model)
    print(f"\nsurface optimum at unseen P = 3e7 ({wall:.2f} s): N* = {prediction.n_hidden.value:.4g} "
          f"[{prediction.n_hidden.ci_low:.4g}, {prediction.n_hidden.ci_high:.4g}], k_e* = {prediction.k_e.value:.4g} "
          f"[{prediction.k_e.ci_low:.4g}, {prediction.k_e.ci_high:.4g}], interior = {prediction.interior}")
    tradeoff = results[3][2]
    print(f"tradeoff model Pearson r = {tradeoff.pearson_r:.5f}; interior optima at "
          f"{sum(o.interior for o in tradeoff.optima)}/{len(tradeoff.optima)} budgets")

    print(f"\n{'budget':>8} {'true d_m*':>10} {'located d_m*':>13} {'95% CI':>18} {'in CI':>6} {'method':>9}")
    for located in optima.optima:
        truth = D_M_LAW_TRUTH["coefficient"] * located.budget ** D_M_LAW_TRUTH["exponent"]
        d_m = located.d_m
        print(f"{located.budget:>8.3g} {truth:>10.4g} {d_m.value:>13.4g} "
              f"{f'[{d_m.ci_low:.4g}, {d_m.ci_high:.4g}]':>18} "
              f"{'yes' if d_m.contains(truth) else 'NO':>6} {located.method:>9}")


if __name__ == "__main__":
    main()
