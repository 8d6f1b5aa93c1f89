"""What the store returns: frozen dataclasses, detached from the database; every datetime is aware UTC."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from resultsdb.models import MetricMode, SweepStatus, TrialStatus


@dataclass(frozen=True)
class SweepInfo:
    id: int
    name: str
    task: str
    metric: str
    mode: MetricMode
    metric_modes: dict[str, str]
    spec_text: str
    spec_hash: str
    status: SweepStatus
    code_version: str | None
    created_at: datetime
    finished_at: datetime | None
    trial_counts: dict[TrialStatus, int]

    @property
    def ingested(self) -> bool:
        """Whether the sweep holds results ingested from elsewhere: it has no spec, so nothing to run."""
        try:
            recorded = json.loads(self.spec_text)
        except ValueError:  # a YAML spec
            return False
        return isinstance(recorded, dict) and recorded.get("source") == INGESTED_SOURCE


INGESTED_SOURCE = "ingest"


def ingested_spec_text(name: str, declared: Mapping[str, str], metric_modes: Mapping[str, str]) -> str:
    """What an ingested sweep records as its spec: where its results came from, its declared task, metric, mode."""
    return json.dumps({"source": INGESTED_SOURCE, "name": name, **declared, "metric_modes": metric_modes},
                      sort_keys=True)


@dataclass(frozen=True)
class IngestedTrials:
    """What one ingest stored: its trials' ids in the order given, and which existing trials it changed."""

    created_sweep: bool
    trial_ids: list[str]
    overwritten: list[str]


@dataclass(frozen=True)
class DriverLease:
    """A sweep's driver lease as taken: `holder` identifies this acquisition (heartbeat and release name it)."""

    sweep: str
    holder: str
    host: str
    pid: int
    acquired_at: datetime


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one trial, as the writer keeps it (see resultsdb.writes); `final` is the test value."""

    last: float | None
    last_step: int | None
    min: float | None
    max: float | None
    best: float | None
    best_step: int | None
    final: float | None


@dataclass(frozen=True)
class TrialInfo:
    """A trial's columns, its sweep, and the summaries of the metrics its sweep declares that have a value."""

    id: str
    sweep: str
    sweep_metric: str
    status: TrialStatus
    budget: int | None
    n_hidden: int
    d_m: int
    d_mlp: int
    l_mlp: int
    d_tree: int
    d_branch: int
    rho_rec: float
    k_e: int
    k_c: int
    params_total: int
    seed: int
    attempts: int
    error: str | None
    node: str | None
    device: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    status_at: datetime | None
    config: dict[str, Any]
    metrics: dict[str, MetricSummary]


@dataclass(frozen=True)
class TrialPage:
    """`rows` hold `fields` (in that order) of each trial; pass `next_cursor` to query_trials for the next page."""

    fields: list[str]
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class SeriesPoint:
    step: int
    value: float | None
    wall_time: float


@dataclass(frozen=True)
class EventInfo:
    id: int
    created_at: datetime
    kind: str
    sweep: str | None
    trial_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Interval:
    """A value with its 95 % interval; an end is ±inf where the interval is open."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PredictedOptimum:
    """What a law predicted at a budget: the optimal allocation and the metric there."""

    law: str
    d_m: Interval
    n_hidden: Interval
    k_e: Interval
    metric: Interval


@dataclass(frozen=True)
class PredictionScore:
    """How a prediction fared against the finished trials at its budget (see ResultsStore.score_predictions)."""

    scored_at: datetime
    observed_hash: str  # of the (trial id, value) pairs scored against
    sweeps: list[str]  # the sweeps whose trials at the budget it was scored against
    observed: dict[str, Any]  # the observed optimum there, as the scorer described it
    d_m_inside: bool
    metric_inside: bool
    metric_error: float  # predicted minus observed metric
    regret: float  # how much worse the observed allocation nearest the predicted d_m is than the best one (>= 0)


@dataclass(frozen=True)
class PredictionInfo:
    """A recorded prediction: made from `sweep`'s trials at budgets below `budget`, and its score once there is one.

    `experiment` is what a sweep must share with `sweep` (besides its task) for its trials to score the prediction.
    """

    id: int
    created_at: datetime
    sweep: str
    task: str
    experiment: dict[str, Any]
    metric: str
    mode: MetricMode
    budget: int
    n_bootstrap: int
    predicted: PredictedOptimum
    snapshot_hash: str
    snapshot_trials: int
    snapshot_budgets: list[int]
    score: PredictionScore | None
