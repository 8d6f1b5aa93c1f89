"""Recorded predictions (internal to resultsdb): the experiment a sweep belongs to, prediction rows, and the finished
trials that score a prediction (see ResultsStore.create_prediction and score_predictions).

Two sweeps are one experiment when they have the same task and their specs agree, as written, on everything that
shapes a trial's result apart from its budget, its allocation values and its seed: `task_options`,
`allocation.fixed`, which axes `allocation.vary` varies, and `training`. Their names, budgets, grid values, seeds,
scheduler, resources and descriptions may differ: `orchestrator suggest` writes such a spec. A sweep ingested
through the API declares none of those settings, so it is an experiment of its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml
from sqlalchemy import Connection, Row, Select, select, update

from resultsdb import queries, writes
from resultsdb.errors import UnknownMetric
from resultsdb.frames import METRIC_COLUMN, MetricFrame
from resultsdb.models import ACTIVE_TRIAL_STATUSES, SUCCESSFUL_TRIAL_STATUSES, MetricMode, Prediction, Sweep
from resultsdb.queries import utc
from resultsdb.records import (
    INGESTED_SOURCE,
    Interval,
    PredictedOptimum,
    PredictionInfo,
    PredictionScore,
    SweepInfo,
)

PREDICTED_VALUES = ("d_m", "n_hidden", "k_e", "metric")
# Columns of each predicted value: (value, low end, high end).
PREDICTED_COLUMNS = {name: (f"{name}_value" if name == "metric" else name, f"{name}_low", f"{name}_high")
                     for name in PREDICTED_VALUES}
UNIQUE_COLUMNS = ("sweep_id", "metric", "budget", "law", "n_bootstrap", "snapshot_hash")
ACTIVE = frozenset(status.value for status in ACTIVE_TRIAL_STATUSES)
SUCCESSFUL = frozenset(status.value for status in SUCCESSFUL_TRIAL_STATUSES)
# What a scorer is given: the mode, the predicted d_m and metric, the observed trials (value in METRIC_COLUMN).
Scorer = Callable[[str, Interval, Interval, pd.DataFrame], Mapping[str, Any] | None]


def experiment_of(name: str, spec_text: str) -> dict[str, Any]:
    """What a sweep must share with another of its task to score the other's predictions (see the module doc)."""
    try:
        spec = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        spec = None
    if not isinstance(spec, dict) or spec.get("source") == INGESTED_SOURCE:
        return {"sweep": name}
    allocation = _mapping(spec.get("allocation"))
    return {"task_options": _mapping(spec.get("task_options")), "fixed": _mapping(allocation.get("fixed")),
            "varied": sorted(_mapping(allocation.get("vary"))), "training": _mapping(spec.get("training"))}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def prediction_row(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a prediction given as ResultsStore.create_prediction takes it; ValueError naming what is
    missing or not finite."""
    try:
        row: dict[str, Any] = {"budget": int(round(float(prediction["budget"]))), "law": str(prediction["law"]),
                               "n_bootstrap": int(prediction["n_bootstrap"]),
                               "snapshot_hash": str(prediction["snapshot_hash"]),
                               "snapshot_trials": int(prediction["n_trials"]),
                               "snapshot_budgets": sorted(int(round(float(b))) for b in prediction["budgets"])}
        for name, columns in PREDICTED_COLUMNS.items():
            estimate = prediction[name]
            ends = [float(estimate[key]) for key in ("value", "ci_low", "ci_high")]
            if not all(map(math.isfinite, ends)):
                raise ValueError(f"prediction {name}: {ends} is not a finite value and interval")
            row.update(zip(columns, ends))
    except (KeyError, TypeError) as error:
        raise ValueError(f"prediction lacks {error} or has a value of the wrong type") from None
    return row


def _selected() -> Select:
    return (select(Prediction.__table__, Sweep.name.label("sweep_name"), Sweep.task, Sweep.spec_text,
                   Sweep.mode.label("sweep_mode"), Sweep.metric_modes)
            .join(Sweep, Sweep.id == Prediction.sweep_id).order_by(Prediction.id))


def _info(row: Row) -> PredictionInfo:
    intervals = {name: Interval(*(getattr(row, column) for column in columns))
                 for name, columns in PREDICTED_COLUMNS.items()}
    score = None
    if row.scored_at is not None:
        observed = dict(row.observed)
        score = PredictionScore(scored_at=utc(row.scored_at), observed_hash=row.observed_hash,
                                sweeps=observed.pop("sweeps"), observed=observed,
                                d_m_inside=row.d_m_inside, metric_inside=row.metric_inside,
                                metric_error=row.metric_error, regret=row.regret)
    return PredictionInfo(
        id=row.id, created_at=utc(row.created_at), sweep=row.sweep_name, task=row.task,
        experiment=experiment_of(row.sweep_name, row.spec_text), metric=row.metric,
        mode=MetricMode(row.metric_modes.get(row.metric, row.sweep_mode)), budget=row.budget,
        n_bootstrap=row.n_bootstrap, predicted=PredictedOptimum(law=row.law, **intervals),
        snapshot_hash=row.snapshot_hash, snapshot_trials=row.snapshot_trials,
        snapshot_budgets=list(row.snapshot_budgets), score=score,
    )


def prediction_infos(connection: Connection, sweep: str | None) -> list[PredictionInfo]:
    """Every prediction, oldest first; with `sweep` (NotFound when it does not exist), those made from it or scored
    against its trials."""
    if sweep is not None:
        queries.sweep_id(connection, sweep)
    infos = [_info(row) for row in connection.execute(_selected())]
    return [info for info in infos if sweep is None or sweep in _sweeps_of(info)]


def _sweeps_of(prediction: PredictionInfo) -> set[str]:
    """The sweep a prediction was made from, and those it was scored against."""
    return {prediction.sweep, *(prediction.score.sweeps if prediction.score else ())}


def insert_without_commit(connection: Connection, sweep: str, metric: str | None,
                          row: dict[str, Any]) -> tuple[PredictionInfo, bool]:
    """The prediction (inserted unless the same one from the same snapshot exists) and whether it was inserted."""
    info = queries.find_sweep(connection, sweep)
    metric = metric or info.metric
    queries.check_metrics(connection, info.id, [metric])
    key = {**row, "sweep_id": info.id, "metric": metric}
    inserted = connection.execute(
        writes.dialect_insert(connection, Prediction).values(**key, created_at=writes.now())
        .on_conflict_do_nothing(index_elements=list(UNIQUE_COLUMNS)).returning(Prediction.id)
    ).scalar()
    found = connection.execute(
        _selected().where(*(getattr(Prediction, column) == key[column] for column in UNIQUE_COLUMNS))
    ).one()
    if inserted is not None:
        payload = {"prediction": inserted, "metric": metric, "budget": row["budget"], "law": row["law"]}
        writes.append_events(connection, [{"kind": "prediction_recorded", "sweep_id": info.id, "payload": payload}])
    return _info(found), inserted is not None


@dataclass(frozen=True)
class Observation:
    """The finished trials at a prediction's budget in the sweeps of its experiment, and a hash of (id, value)."""

    trials: pd.DataFrame
    sweeps: list[str]
    hash: str


class MetricTrials:
    """The trials of sweeps' metric frames, each read once by `read(sweep, metric)` (ResultsStore.metric_frame); None
    for a sweep without the metric."""

    def __init__(self, read: Callable[[str, str], MetricFrame]) -> None:
        self._read = read
        self._frames: dict[tuple[str, str], pd.DataFrame | None] = {}

    def __call__(self, sweep: str, metric: str) -> pd.DataFrame | None:
        if (sweep, metric) not in self._frames:
            try:
                self._frames[sweep, metric] = self._read(sweep, metric).trials
            except UnknownMetric:
                self._frames[sweep, metric] = None
        return self._frames[sweep, metric]


def experiments_of(sweeps: Sequence[SweepInfo]) -> list[tuple[SweepInfo, dict[str, Any]]]:
    """Each sweep with its experiment, parsed from its spec once for every prediction it may score."""
    return [(sweep, experiment_of(sweep.name, sweep.spec_text)) for sweep in sweeps]


def observation(prediction: PredictionInfo, sweeps: Sequence[tuple[SweepInfo, dict[str, Any]]],
                metric_trials: MetricTrials) -> Observation | None:
    """The trials that score `prediction`: those at its budget, succeeded, with a value of its metric, in the sweeps
    (with their experiments, `experiments_of`) of its task and experiment.

    None while a trial at the budget in one of those sweeps is still to run, or none has a value.
    """
    found = []
    for sweep, experiment in sweeps:
        if sweep.task != prediction.task or experiment != prediction.experiment:
            continue
        trials = metric_trials(sweep.name, prediction.metric)
        if trials is None:
            continue
        at_budget = trials[trials["budget"] == prediction.budget]
        if at_budget["status"].isin(ACTIVE).any():
            return None
        finished = at_budget[at_budget["status"].isin(SUCCESSFUL) & at_budget[METRIC_COLUMN].notna()]
        if not finished.empty:
            found.append((sweep.name, finished))
    if not found:
        return None
    trials = pd.concat([frame for _, frame in found], ignore_index=True)
    digest = hashlib.sha256()
    for line in sorted(f"{trial_id}\x1f{value!r}" for trial_id, value in zip(trials["id"], trials[METRIC_COLUMN])):
        digest.update(line.encode() + b"\n")
    return Observation(trials, [name for name, _ in found], digest.hexdigest())


def score_without_commit(connection: Connection, prediction_id: int, seen: Observation,
                         score: Mapping[str, Any]) -> bool:
    """Record the score of the trials `seen` unless it is recorded already; returns whether it was recorded."""
    values = {
        "scored_at": writes.now(), "observed_hash": seen.hash,
        "observed": {**score["observed"], "sweeps": seen.sweeps},
        **{field: score[field] for field in ("d_m_inside", "metric_inside")},
        **{field: float(score[field]) for field in ("metric_error", "regret")},
    }
    changed = connection.execute(
        update(Prediction).where(Prediction.id == prediction_id, Prediction.observed_hash.is_distinct_from(seen.hash))
        .values(**values)
    ).rowcount
    return bool(changed)
