"""Orchestrator overhead: trivial trials through the full results path vs bare Ray Tune, in one run.

    .venv/bin/python benchmarks/orchestrator_overhead.py [--trials 200] [--reports 50] [--db URL]

Both runs use the same trivial trainable (50 `tune.report` calls, no training) and the same Tune settings; the
full path adds the elmscale callback, the outbox file and batched idempotent writes into the database (a fresh
SQLite file unless --db names a Postgres server URL, whose database must be empty or hold no sweep of this name).
Prints the wall time of each and their ratio (target <= 1.10).
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
from orchestrator.spec import parse_spec  # noqa: E402
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
    spec_text = yaml.safe_dump({
        "name": "overhead", "task": "synthetic_copy", "metric": {"name": "train_loss", "mode": "min"},
        "budgets": [1e4], "allocation": {"vary": {"d_m": [2]}},
    })
    spec = parse_spec(spec_text)
    store.create_sweep("overhead", task="synthetic_copy", metric="train_loss", mode="min", spec_text=spec_text)
    allocation = {"budget": 1e4, "n_hidden": 1, "d_m": 1, "d_mlp": 2, "l_mlp": 1, "d_tree": 1, "d_branch": 1,
                  "rho_rec": 0.0, "k_e": 1, "k_c": 1, "params_total": 1}
    rows = [{"config": {"i": i}, "seed": 0, **allocation} for i in range(args.trials)]
    trial_ids = store.add_trials("overhead", rows)
    configs = [{"trial_id": tid, "reports": args.reports} for tid in trial_ids]

    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    bare = fit(configs, [], work / "ray", "bare")

    sink = ResultSink(store, Outbox(work / "outbox", spec.name)).start()
    progress = runner.SweepProgress(args.trials, "train_loss", "min", budget_of={t: 1e4 for t in trial_ids})
    runner._DRIVERS[spec.name] = runner.Driver(sink, progress, {t: args.reports for t in trial_ids},
                                               runner.CancelWatch(store, spec.name))
    started = time.perf_counter()
    fit(configs, [runner.SinkCallback(spec.name)], work / "ray", "full")
    delivered = sink.close()
    full = time.perf_counter() - started
    ray.shutdown()

    stored = sum(len(store.series(t, "train_loss", max_points=10_000)) for t in trial_ids)
    expected = args.trials * args.reports
    print(f"{args.trials} trials x {args.reports} reports on {os.cpu_count()} CPUs, database {db.split(':')[0]}")
    print(f"bare Ray Tune:              {bare:8.1f} s")
    print(f"full path (callback, outbox, database): {full:8.1f} s  (all delivered: {delivered}, "
          f"{stored}/{expected} points stored)")
    print(f"ratio full / bare:          {full / bare:8.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
