"""Orchestrator overhead: trivial trials through the full results path vs bare Ray Tune, in one run.

    .venv/bin/python benchmarks/orchestrator_overhead.py [--trials 200] [--reports 50] [--db URL]

Both paths run the same trivial trainable (50 `tune.report` calls, no training) with the same Tune settings; the
full path adds the elmscale callback, the outbox file and batched idempotent writes into the database (a fresh
SQLite file unless --db names an empty Postgres database). After a warm-up the paths alternate (bare, full, full,
bare) and the ratio of their total wall times is printed (target <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("ELMSCALE_STATE_DIR", tempfile.mkdtemp(prefix="elmscale-bench-"))

from orchestrator import runner  # noqa: E402  (runner configures Ray's environment on import)
from orchestrator.sink import Outbox, ResultSink  # noqa: E402
from resultsdb import ResultsStore, migrate  # noqa: E402

ray, tune = runner.ray, runner.tune


def trivial_trial(config: dict) -> None:
    for step in range(1, config["trial"]["reports"] + 1):
        tune.report({"step": step, "train_loss": 1.0 / step, runner.METRIC_KEYS_FIELD: "train_loss"})


def fit(configs: list[dict], callbacks: list, storage: Path, name: str) -> float:
    tuner = tune.Tuner(
        tune.with_resources(trivial_trial, {"cpu": 1}),
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks, verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


ALLOCATION = {"budget": 1e4, "n_hidden": 1, "d_m": 1, "d_mlp": 2, "l_mlp": 1, "d_tree": 1, "d_branch": 1,
              "rho_rec": 0.0, "k_e": 1, "k_c": 1, "params_total": 1}


def full_path(store: ResultsStore, name: str, trials: int, reports: int, work: Path) -> tuple[float, int, bool]:
    """One run through the elmscale path into a fresh sweep: (seconds, points stored, all delivered)."""
    spec_text = yaml.safe_dump({
        "name": name, "task": "synthetic_copy", "metric": {"name": "train_loss", "mode": "min"},
        "budgets": [1e4], "allocation": {"vary": {"d_m": [2]}},
    })
    store.create_sweep(name, task="synthetic_copy", metric="train_loss", mode="min", spec_text=spec_text)
    trial_ids = store.add_trials(name, [{"config": {"i": i}, "seed": 0, **ALLOCATION} for i in range(trials)])
    sink = ResultSink(store, Outbox(work / "outbox", name)).start()
    progress = runner.SweepProgress(trials, "train_loss", "min", budget_of={t: 1e4 for t in trial_ids})
    runner._DRIVERS[name] = runner.Driver(sink, progress, {t: reports for t in trial_ids},
                                          runner.CancelWatch(store, name))
    configs = [{"trial_id": tid, "reports": reports} for tid in trial_ids]
    started = time.perf_counter()
    fit(configs, [runner.SinkCallback(name)], work / "ray", name)
    delivered = sink.close()
    seconds = time.perf_counter() - started
    stored = sum(len(store.series(t, "train_loss", max_points=10_000)) for t in trial_ids)
    return seconds, stored, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="elmscale-overhead-"))
    db = args.db or f"sqlite:///{work / 'bench.db'}"
    migrate.upgrade(db)
    store = ResultsStore(db)
    bare_configs = [{"trial_id": f"bare-{i}", "reports": args.reports} for i in range(args.trials)]
    expected = args.trials * args.reports
    print(f"{args.trials} trials x {args.reports} reports on {os.cpu_count()} CPUs, database {db.split(':')[0]}")

    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    fit(bare_configs[:4], [], work / "ray", "warm-up")  # worker processes start once, before anything is timed
    # Alternate the two paths (bare, full, full, bare) so drift in the machine's load hits both alike.
    bare, full = [], []
    for round_name in ("bare-1", "full-1", "full-2", "bare-2"):
        if round_name.startswith("bare"):
            bare.append(fit(bare_configs, [], work / "ray", round_name))
            print(f"{round_name}: {bare[-1]:8.1f} s", flush=True)
        else:
            seconds, stored, delivered = full_path(store, f"overhead-{round_name}", args.trials, args.reports, work)
            full.append(seconds)
            print(f"{round_name}: {seconds:8.1f} s  (callback, outbox, database; all delivered: {delivered}, "
                  f"{stored}/{expected} points stored)", flush=True)
    ray.shutdown()
    print(f"ratio full/bare: {sum(full) / sum(bare):8.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
