"""Compute and regret of the adaptive search (analysis.search) replayed against full grids.

Grids: (a) a recorded full grid of the laptop sweep (sweeps/laptop_tradeoff.yaml: pystdlib, its budgets × d_m
1..16 × 2 seeds, 1000 steps), read from benchmarks/fixtures/laptop_tradeoff_curves.csv.gz, which the first run
writes from the sweep's database (--from-db URL --sweep NAME; generated, not in the repository); the search sees
seed 0's valid_bpc curves (what sweeps/laptop_tradeoff_adaptive.yaml trains: the same configs, seed 0), the
regret is judged on test_bpc. (b) synthetic grids from the frontier law of
analysis.synthetic (13 d_m values per budget, 2 seeds) with the recorded grid's relative seed sd, and learning
curves that fall as (steps/step)^0.5 with their own report noise.

Compared, per budget: the compute the search used (trial-steps, a stopped trial counted to its stop) over the
full grid's (every d_m × every seed × all steps), and the regret: the full grid's seed-averaged final metric at
the allocation the search reports as best minus the grid's best, over the pooled seed sd.

Run: .venv/bin/python benchmarks/search_efficiency.py [--from-db URL --sweep NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.search import SearchSettings, TrialReport, predict_d_m, search_step
from analysis.synthetic import BUDGETS, D_M_VALUES, frontier_truth

FIXTURE = Path(__file__).parent / "fixtures" / "laptop_tradeoff_curves.csv.gz"
CURVE_METRIC, FINAL_METRIC = "valid_bpc", "test_bpc"


def export_fixture(url: str, sweep: str) -> None:
    from resultsdb import ResultsStore

    store = ResultsStore(url)
    rows = []
    for trial in store.summary_frame(sweep).itertuples():
        for metric in (CURVE_METRIC, FINAL_METRIC):
            points = store.series(trial.id, metric)
            rows += [(trial.budget, trial.d_m, trial.seed, p.step, metric, p.value) for p in points]
    FIXTURE.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=["budget", "d_m", "seed", "step", "metric", "value"]).to_csv(FIXTURE, index=False)


def recorded_grid() -> pd.DataFrame:
    """Long table budget, d_m, seed, step, metric, value."""
    if not FIXTURE.exists():
        raise SystemExit(f"error: no recorded grid at {FIXTURE}: run a full grid (orchestrator submit "
                         "sweeps/laptop_tradeoff.yaml --db sqlite:///laptop.db), then this benchmark once with "
                         "--from-db sqlite:///laptop.db --sweep laptop_tradeoff")
    return pd.read_csv(FIXTURE)


def seed_sd(finals: pd.DataFrame) -> float:
    """Pooled sd of one seed's final metric within allocations (finals: budget, d_m, seed, value)."""
    groups = finals.groupby(["budget", "d_m"])["value"]
    return float(np.sqrt((groups.transform(lambda v: v - v.mean()) ** 2).sum() / (len(finals) - groups.ngroups)))


def synthetic_grid(rng_seed: int, relative_sd: float, steps: int = 1000, seeds: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    rows = []
    report_steps = range(steps // 4, steps + 1, steps // 4)
    for budget in BUDGETS:
        for d_m in D_M_VALUES:
            truth = float(frontier_truth(budget, None, None, d_m))
            for seed in range(seeds):
                final = truth * (1 + relative_sd * rng.standard_normal())
                rows.append((budget, d_m, seed, steps, FINAL_METRIC, final))
                for step in report_steps:
                    value = final * (1 + 0.3 * ((steps / step) ** 0.5 - 1)) * (1 + relative_sd * rng.standard_normal())
                    rows.append((budget, d_m, seed, step, CURVE_METRIC, value))
    return pd.DataFrame(rows, columns=["budget", "d_m", "seed", "step", "metric", "value"])


def replay_budget(grid: pd.DataFrame, settings: SearchSettings,
                  predicted: float | None) -> tuple[float, int, list[str]]:
    """(reported best d_m, trial-steps used, reasons) of the search over one budget's grid (seed 0's curves)."""
    curves = {d: dict(zip(g["step"], g["value"])) for d, g in
              grid[(grid["metric"] == CURVE_METRIC) & (grid["seed"] == 0)].groupby("d_m")}
    rung = min(s for s in curves[next(iter(curves))] if s >= settings.rung_fraction * settings.steps)
    reports: dict[float, TrialReport] = {}
    reasons = []
    while True:
        step = search_step(sorted(curves), list(reports.values()), predicted, settings)
        reasons += [d.reason for d in step.decisions]
        if step.done:
            used = sum(r.last_step for r in reports.values())
            return float(step.best_d_m), used, reasons
        for decision in step.decisions:
            curve = curves[decision.d_m]
            if decision.action == "start":
                reports[decision.d_m] = TrialReport(decision.d_m, {s: v for s, v in curve.items() if s <= rung})
            elif decision.action == "continue":
                reports[decision.d_m] = TrialReport(decision.d_m, curve)
            elif decision.action == "stop":
                reports[decision.d_m] = TrialReport(decision.d_m, reports[decision.d_m].curve, stopped=True)


def replay(name: str, grid: pd.DataFrame, settings: SearchSettings, verbose: bool) -> list[tuple[float, float]]:
    finals = grid[grid["metric"] == FINAL_METRIC]
    finals = finals[finals["step"] == finals.groupby(["budget", "d_m", "seed"])["step"].transform("max")]
    sd = seed_sd(finals)
    full_steps = grid[grid["metric"] == CURVE_METRIC].groupby(["budget", "d_m", "seed"])["step"].max()
    budgets, optima, results, used_total = [], [], [], 0
    for budget, at_budget in grid.groupby("budget"):
        predicted = predict_d_m(budgets, optima, float(budget))
        best, used, reasons = replay_budget(at_budget, settings, predicted)
        budgets.append(float(budget))
        optima.append(best)
        means = finals[finals["budget"] == budget].groupby("d_m")["value"].mean()
        fraction = used / full_steps.loc[budget].sum()
        regret = (means[best] - means.min()) / sd
        results.append((fraction, regret))
        used_total += used
        print(f"{name:>14} budget {budget:>9.3g}: best d_m {best:6.3g} (grid's {means.idxmin():6.3g}), "
              f"compute {fraction:.3f}, regret {regret:.2f} sd")
        if verbose:
            print("\n".join(f"{'':>16}{r}" for r in reasons))
    print(f"{name:>14} total: compute {used_total / full_steps.sum():.3f}, worst regret "
          f"{max(r for _, r in results):.2f} sd")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-db", help="write the fixture from this database URL first")
    parser.add_argument("--sweep", default="laptop_tradeoff")
    parser.add_argument("--synthetic", type=int, default=5, help="synthetic grids to draw")
    parser.add_argument("--verbose", action="store_true", help="print every decision's reason")
    args = parser.parse_args()
    if args.from_db:
        export_fixture(args.from_db, args.sweep)
    recorded = recorded_grid()
    steps = int(recorded["step"].max())
    finals = recorded[recorded["metric"] == FINAL_METRIC]
    relative_sd = seed_sd(finals) / float(finals["value"].mean())
    print(f"recorded seed sd {seed_sd(finals):.4f} ({100 * relative_sd:.2f} % of the mean {FINAL_METRIC})")
    results = replay("recorded", recorded, SearchSettings(steps=steps), args.verbose)
    for draw in range(args.synthetic):
        results += replay(f"synthetic {draw}", synthetic_grid(draw, relative_sd, steps),
                          SearchSettings(steps=steps, coarse_stride=2), args.verbose)
    fractions, regrets = zip(*results)
    print(f"compute fraction {max(fractions):.3f}, regret {max(regrets):.2f}")


if __name__ == "__main__":
    main()
