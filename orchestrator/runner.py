"""Run a planned sweep on Ray Tune, every result through the outbox into the results store.

The database is the record of what should run: `prepare` writes the sweep and all its trials (pending) before
anything starts, and `run` executes only the trials that are not finished, so a resume after a killed driver
is just another `run`. Each trial checkpoints into `<state_dir>/checkpoints/<sweep>/<trial_id>` (a shared path
on a multi-node cluster) and resumes from there on retry or resume.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress display replaces Tune's tables
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # not every report carries the valid metric

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402

from elm_core.train import reported_metrics
from resultsdb import (
    SUCCESSFUL_TRIAL_STATUSES,
    ConflictError,
    DatabaseUnavailable,
    MetricMode,
    ResultsStore,
    SweepStatus,
    TrialStatus,
)

from . import adaptive
from .plan import TrialPlan, plan
from .sink import Outbox, ResultSink, result_record, status_record
from .spec import SpecError, SweepSpec, changed_keys, parse_spec

METRIC_KEYS_FIELD = "elm_metric_keys"


def state_dir() -> Path:
    return Path(os.environ.get("ELMSCALE_STATE_DIR", ".elmscale")).resolve()


def prepare(spec: SweepSpec, spec_text: str, store: ResultsStore) -> list[TrialPlan]:
    """Plan the sweep and record it with all its trials (idempotent); ConflictError if the name has another spec.

    A spec that differs from the recorded one only in comments or layout is the same sweep. An adaptive search's
    trials are recorded as it starts them.
    """
    trials = plan(spec, f"sweep {spec.name}")
    store.create_sweep(
        spec.name, task=spec.task, metric=spec.metric.name, mode=spec.metric.mode,
        spec_text=_recorded_text_of_same_spec(spec, store) or spec_text,
        metric_modes=_metric_modes(spec), code_version=_code_version(),
    )
    if spec.search.type != "adaptive":
        store.add_trials(spec.name, [t.row() for t in trials])
    return trials


def _recorded_text_of_same_spec(spec: SweepSpec, store: ResultsStore) -> str | None:
    """The text the sweep was recorded with when it parses to `spec`; None for a new sweep; else ConflictError."""
    recorded = store.get_sweep(spec.name)
    if recorded is None:
        return None
    try:
        changed: list[str] | None = changed_keys(parse_spec(recorded.spec_text), spec)
    except SpecError:
        changed = None  # not a spec (an ingested sweep): nothing to compare key by key
    if changed == []:
        return recorded.spec_text
    differing = f" ({', '.join(changed)} differ)" if changed else ""
    raise ConflictError(f"sweep {spec.name!r} already exists with a different spec{differing}: "
                        f"`orchestrator resume {spec.name}` continues it as recorded; or give this spec another name")


def _metric_modes(spec: SweepSpec) -> dict[str, MetricMode]:
    """The direction of each metric the task reports that has one (the others keep their best by the sweep's)."""
    return {name: MetricMode(mode) for name, mode in reported_metrics(spec.task).items() if mode is not None}


def _code_version() -> str:
    from importlib.metadata import version

    return version("elmscale")


def trial_statuses(store: ResultsStore, sweep: str) -> dict[str, TrialStatus]:
    page = store.query_trials(sweep, fields=["id", "status"], limit=None)
    return {row["id"]: row["status"] for row in page.rows}


# --- inside a Ray worker -----------------------------------------------------------------------------------------


def run_trial(tune_config: dict) -> None:
    """The Tune trainable: train one trial, reporting every metric window; never touches the database."""
    import torch

    from elm_core.train import pick_device, train

    config = tune_config["trial"]
    threads = max(1, int(config["cpus"]))
    torch.set_num_threads(threads)
    node = ray.get_runtime_context().get_node_id()
    where = {"node": f"{socket.gethostname()}:{node[:12]}",
             "device": str(pick_device(config["train_config"].get("device", "auto")))}

    def report(step: int, metrics: dict) -> None:
        tune.report({"step": step, **metrics, **where, METRIC_KEYS_FIELD: ",".join(metrics)})

    train(config["train_config"], report, checkpoint_dir=config["checkpoint_dir"], until=config.get("until"))


# --- on the driver ------------------------------------------------------------------------------------------------


@dataclass
class SweepProgress:
    """What the live display shows; updated by the Tune callback.

    `on_change(trial_id, status, value, error)` hears every status change: `value` is a completed trial's final
    metric, `error` a failed trial's error line.
    """

    total: int
    metric: str
    mode: str
    status: dict[str, TrialStatus] = field(default_factory=dict)
    budget_of: dict[str, float] = field(default_factory=dict)
    best_by_budget: dict[float, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_change: Callable[[str, TrialStatus, float | None, str | None], None] | None = None

    def set_status(self, trial_id: str, status: TrialStatus, value: float | None = None,
                   error: str | None = None) -> None:
        with self.lock:
            self.status[trial_id] = status
        if self.on_change is not None:
            self.on_change(trial_id, status, value, error)

    def observe(self, trial_id: str, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        budget = self.budget_of[trial_id]
        with self.lock:
            best = self.best_by_budget.get(budget)
            if best is None or (value < best if self.mode == MetricMode.MIN else value > best):
                self.best_by_budget[budget] = value

    def counts(self) -> Counter:
        with self.lock:
            return Counter(self.status.values())

    def running(self) -> list[str]:
        with self.lock:
            return [trial_id for trial_id, status in self.status.items() if status == TrialStatus.RUNNING]


class CancelWatch:
    """Ends every trial once `orchestrator cancel` marked the sweep stopped (the database is checked every 2 s)."""

    def __init__(self, store: ResultsStore, sweep: str):
        self.store, self.sweep = store, sweep
        self.cancelled = False
        self._checked = 0.0

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self._checked > 2.0:
            self._checked = now
            try:
                sweep = self.store.get_sweep(self.sweep)
            except DatabaseUnavailable:
                return False
            self.cancelled = sweep is not None and sweep.status == SweepStatus.STOPPED
        return self.cancelled


@dataclass
class Driver:
    """The driver-side objects of one running sweep. Tune pickles its callbacks, so they find these by name."""

    sink: ResultSink
    progress: SweepProgress
    total_steps: dict[str, int]
    cancel: CancelWatch
    until: dict[str, int] = field(default_factory=dict)  # trials trained to a rung, where they pause

    def record(self, trial_id: str, status: TrialStatus, *, value: float | None = None, error: str | None = None,
               final: dict | None = None, note: str | None = None) -> None:
        """A trial's new status, to the database (through the sink) and to the display (with `note`: why)."""
        self.sink.put(status_record(trial_id, status, error=error, final=final))
        self.progress.set_status(trial_id, status, value=value, error=error or note)


_DRIVERS: dict[str, Driver] = {}


class SinkCallback(tune.Callback):
    """Only enqueues: the sink thread does all file and database work."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep
        self.placed: set[str] = set()

    def on_trial_start(self, iteration, trials, trial, **info):
        driver, trial_id = _DRIVERS[self.sweep], trial.config["trial"]["trial_id"]
        self.placed.discard(trial_id)
        driver.record(trial_id, TrialStatus.RUNNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        driver, trial_id = _DRIVERS[self.sweep], trial.config["trial"]["trial_id"]
        keys = [k for k in str(result.get(METRIC_KEYS_FIELD, "")).split(",") if k]
        metrics = {k: result[k] for k in keys if k in result}
        if trial_id not in self.placed:  # the first report of an attempt says where it runs
            self.placed.add(trial_id)
            placement = {"node": result.get("node"), "device": result.get("device")}
            driver.sink.put(status_record(trial_id, TrialStatus.RUNNING, **placement))
        driver.sink.put(result_record(trial_id, result["step"], metrics))
        driver.progress.observe(trial_id, metrics)

    def on_trial_recover(self, iteration, trials, trial, **info):
        driver, trial_id = _DRIVERS[self.sweep], trial.config["trial"]["trial_id"]
        driver.record(trial_id, TrialStatus.PENDING)

    def on_trial_complete(self, iteration, trials, trial, **info):
        driver, trial_id = _DRIVERS[self.sweep], trial.config["trial"]["trial_id"]
        last = trial.last_result or {}
        final = {k: v for k, v in last.items() if k.startswith("test_") and isinstance(v, (int, float))}
        finished = last.get("step", 0) >= driver.total_steps[trial_id] and final
        # A trial cut short by a cancel is not finished: resume picks it up from its checkpoint.
        until = driver.until.get(trial_id)
        if finished:
            status = TrialStatus.COMPLETED
        elif until is not None and last.get("step", 0) >= until:
            driver.record(trial_id, TrialStatus.PENDING, note=f"paused at step {until} for the search to judge")
            return
        else:
            status = TrialStatus.PENDING if driver.cancel.cancelled else TrialStatus.STOPPED_EARLY
        driver.record(trial_id, status, value=final.get(driver.progress.metric), final=final or None)

    def on_trial_error(self, iteration, trials, trial, **info):
        driver, trial_id = _DRIVERS[self.sweep], trial.config["trial"]["trial_id"]
        driver.record(trial_id, TrialStatus.FAILED, error=_error_text(trial))


class CancelStopper(tune.Stopper):
    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __call__(self, trial_id, result) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        driver = _DRIVERS[self.sweep]
        return driver.sink.failure is not None or driver.cancel.stop_all()


def _error_text(trial) -> str:
    """The last line of the trial's traceback: the exception and its message."""
    path = trial.error_file
    if path and Path(path).exists():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:2000]
    return "the trial failed (no error file)"


@dataclass
class RunResult:
    statuses: Counter
    undelivered: bool
    delivery_error: str | None = None
    sweep_status: SweepStatus | None = None  # None while results wait in the outbox
    stalled: str | None = None  # why an adaptive search stopped before its end


def run(
    spec: SweepSpec,
    trials: list[TrialPlan],
    store: ResultsStore,
    *,
    address: str | None = None,
    only: Iterable[str] | None = None,
    live=None,
) -> RunResult:
    """Run the given trials (default: every unfinished one; in an adaptive sweep, what its search decides) and
    wait for them; results land in the store.

    The caller holds the sweep's driver lease (orchestrator.lease).
    """
    root = state_dir()
    outbox = Outbox(root / "outbox", spec.name)
    sink = ResultSink(store, outbox).start()
    sink.flush_outbox()  # whatever a crashed driver left behind goes first

    statuses = trial_statuses(store, spec.name)
    # The caller holds the sweep's lease, so a trial still running was left so by a driver that died: pending
    # again, so that its start here counts as an attempt.
    for trial_id in [trial_id for trial_id, status in statuses.items() if status == TrialStatus.RUNNING]:
        sink.put(status_record(trial_id, TrialStatus.PENDING))
        statuses[trial_id] = TrialStatus.PENDING
    searched = spec.search.type == "adaptive" and only is None
    if only is not None:
        wanted = set(only)
    else:  # a search's trials not yet in the database are started (or not) by the search
        wanted = {t.trial_id for t in trials if statuses.get(t.trial_id) not in SUCCESSFUL_TRIAL_STATUSES
                  and (t.trial_id in statuses or not searched)}
    todo = [t for t in trials if t.trial_id in wanted]
    total = adaptive.most_trials(spec, trials) if spec.search.type == "adaptive" else len(trials)
    progress = SweepProgress(total, spec.metric.name, spec.metric.mode)
    for t in trials:
        progress.budget_of[t.trial_id] = t.budget
        if t.trial_id in statuses or not searched:
            unchanged = statuses.get(t.trial_id, TrialStatus.PENDING)
            progress.status[t.trial_id] = TrialStatus.PENDING if t.trial_id in wanted else unchanged

    cancel = CancelWatch(store, spec.name)
    stalled = None
    if todo or searched:
        store.set_sweep_status(spec.name, SweepStatus.RUNNING)
        total_steps = {t.trial_id: int(t.train_config.get("steps", 1000)) for t in trials}
        driver = _DRIVERS[spec.name] = Driver(sink, progress, total_steps, cancel)
        trainable = tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})

        def fit(group: list[TrialPlan], until: int | None = None) -> None:
            if not ray.is_initialized():
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, runtime_env=_runtime_env() if address else None)
            driver.until = {t.trial_id: until for t in group} if until is not None else {}
            _fit(spec, group, trainable, root, until)

        if live is not None:
            live(progress)
        try:
            if searched:
                hands = adaptive.SearchHands(
                    fit=fit, stop=lambda trial_id, why: driver.record(trial_id, TrialStatus.STOPPED_EARLY, note=why),
                    settle=sink.settle, cancelled=cancel.stop_all)
                try:
                    adaptive.run_search(spec, trials, store, hands)
                except adaptive.SearchStalled as error:
                    stalled = str(error)
            else:
                for group in _groups(todo, by_budget=spec.scheduler.type == "asha"):
                    if not cancel.stop_all():
                        fit(group)
        finally:
            _DRIVERS.pop(spec.name, None)
            _requeue_interrupted(driver)
            undelivered = not sink.close()
    else:
        undelivered = not sink.close()

    if undelivered:  # the database is out of reach: report what the driver saw, the outbox keeps the rest
        return RunResult(progress.counts(), True, str(sink.last_error))
    counts = Counter(trial_statuses(store, spec.name).values())
    # A cancelled sweep stays stopped until resumed.
    if stalled:
        store.set_sweep_status(spec.name, SweepStatus.STOPPED)
        return RunResult(counts, False, sweep_status=SweepStatus.STOPPED, stalled=stalled)
    sweep_status = SweepStatus.STOPPED if (todo or searched) and cancel.cancelled else store.finish_sweep(spec.name)
    return RunResult(counts, False, sweep_status=sweep_status)


def _requeue_interrupted(driver: Driver) -> None:
    """Make the trials the stopped driver still counts as running pending again, so `resume` runs them.

    Tune ends the trials of a cancelled (or interrupted) run without telling the callbacks.
    """
    for trial_id in driver.progress.running():
        driver.record(trial_id, TrialStatus.PENDING)


def _groups(trials: list[TrialPlan], by_budget: bool) -> list[list[TrialPlan]]:
    """ASHA compares trials within one budget only, so each budget is its own Tune run."""
    if not by_budget:
        return [trials]
    budgets = sorted({t.budget for t in trials})
    return [[t for t in trials if t.budget == b] for b in budgets]


def _fit(spec: SweepSpec, group: list[TrialPlan], trainable, root: Path, until: int | None = None) -> None:
    configs = [
        {
            "trial_id": t.trial_id,
            "train_config": t.train_config,
            "checkpoint_dir": str(root / "checkpoints" / spec.name / t.trial_id),
            "cpus": spec.resources.cpu,
            "until": until,
        }
        for t in group
    ]
    scheduler = None
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(
            time_attr="step", metric=spec.valid_metric, mode=spec.metric.mode,
            grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor,
            # Past the last step: at max_t ASHA stops a trial, which would cut off its final test report.
            max_t=max(int(t.train_config.get("steps", 1000)) for t in group) + 1,
        )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=spec.max_concurrent, scheduler=scheduler),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(root / "ray_results"),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[SinkCallback(spec.name)],
            stop=CancelStopper(spec.name),
            verbose=0,
        ),
    )
    tuner.fit()


def _runtime_env() -> dict:
    """Workers on other nodes import this project from the same installed environment; pass the state dir."""
    return {"env_vars": {"ELMSCALE_STATE_DIR": str(state_dir())}}
