"""Pydantic schemas of every request and response body of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from resultsdb import FINISHED_TRIAL_STATUSES, MetricMode, SweepStatus, TrialStatus, canonical_json

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Names reach SQL text columns: no control characters (Postgres refuses NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

MetricName = Annotated[str, Field(min_length=1, max_length=100, pattern=PRINTABLE)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FinishedStatus = Literal[*sorted(status.value for status in FINISHED_TRIAL_STATUSES)]


# Sweeps


class SweepOut(BaseModel):
    name: str
    task: str
    metric: str
    mode: MetricMode
    metric_modes: dict[str, str]
    status: SweepStatus
    code_version: str | None
    created_at: datetime
    finished_at: datetime | None
    trial_counts: dict[TrialStatus, int] = Field(description="Trials by status")
    trials_total: int
    progress: float = Field(description="Fraction of trials that finished (completed, failed or stopped early)")
    best: float | None = Field(
        description="Best value of the sweep's metric over its trials (final, else best reported)"
    )
    budgets: list[int] = Field(description="Distinct parameter budgets of the sweep's trials")


class SweepDetail(SweepOut):
    spec_text: str


# Trials


class TrialPageOut(BaseModel):
    sweep: str
    fields: list[str]
    rows: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class MetricSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    last: float | None = None
    last_step: int | None = None
    min: float | None = None
    max: float | None = None
    best: float | None = None
    best_step: int | None = None
    final: float | None = None


class AllocationOut(BaseModel):
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


class TrialOut(AllocationOut):
    model_config = ConfigDict(from_attributes=True)

    id: str
    sweep: str
    status: TrialStatus
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
    metrics: dict[str, MetricSummaryOut]


class SeriesPointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    value: float | None
    wall_time: float


class SeriesOut(BaseModel):
    trial_id: str
    metric: str
    points: list[SeriesPointOut]


# Frontier, optimum, fit


class FrontierPointOut(AllocationOut):
    id: str | None = Field(None, description="The trial, when seeds are not aggregated")
    seed: int | None = Field(None, description="The trial's seed, when seeds are not aggregated")
    value: float = Field(description="The metric (mean over seeds when aggregated)")
    value_std: float | None = Field(None, description="Std over seeds (ddof 1); null for one seed or no aggregation")
    n_seeds: int | None = None


FrontierKind = Literal["auto", "per_budget", "pareto"]
LawName = Literal["frontier", "allocation", "surface", "tradeoff"]
PositiveBudget = Annotated[float, Field(gt=0, le=1e15, allow_inf_nan=False)]


class FrontierOut(BaseModel):
    sweep: str
    metric: str
    mode: str
    kind: Literal["per_budget", "pareto"] = Field(
        description="per_budget: each budget's best allocation (a fixed-budget sweep); pareto: strict Pareto set "
                    "over cost"
    )
    cost: str = Field(description="The cost axis: 'budget' for a per-budget frontier")
    aggregate_seeds: bool
    points: list[FrontierPointOut] = Field(description="Frontier points sorted by cost")


class OptimumChoice(AllocationOut):
    value: float
    value_std: float | None = None
    n_seeds: int | None = None


class EstimateOut(BaseModel):
    value: float | None
    ci_low: float | None = Field(
        description="95 % bootstrap interval; null where it is open (beyond the grid) or unknown"
    )
    ci_high: float | None


class LocatedOptimumOut(BaseModel):
    """The budget's optimum located between grid points (analysis.optimum)."""

    budget: float
    axis: str = Field(description="The swept axis the profile is fitted along")
    method: Literal["parabola", "grid"]
    edge: Literal["low", "high"] | None = Field(description="The best allocation is the grid's first or last")
    note: str | None = Field(description="What to do about an edge or a profile that cannot be located")
    interval: Literal["seeds", "residuals", "none"] = Field(description="What the bootstrap resampled")
    d_m: EstimateOut | None
    n_hidden: EstimateOut | None
    k_e: EstimateOut | None
    k_c: EstimateOut | None
    metric: EstimateOut
    grid_best: float
    grid_best_metric: float
    n_allocations: int
    n_trials: int


class BudgetOptimumOut(BaseModel):
    budget: int
    best: OptimumChoice
    runner_up: OptimumChoice | None
    located: LocatedOptimumOut | None
    n_allocations: int
    gap: float | None = Field(description="How much worse the runner-up is (>= 0); null without one")


class OptimumOut(BaseModel):
    sweep: str
    metric: str
    mode: str
    aggregate_seeds: bool
    budgets: list[BudgetOptimumOut]


class CurveOut(BaseModel):
    label: str
    budget: float | None = Field(description="The budget whose sweep the curve follows; null for a law across budgets")
    x: str
    y: str
    points: list[list[float | None]] = Field(description="[x, y, 95 % low, 95 % high] along x")


class PredictionOut(BaseModel):
    budget: float
    d_m: EstimateOut | None
    n_hidden: EstimateOut | None
    k_e: EstimateOut | None
    metric: EstimateOut | None
    interior: bool | None


class LawOut(BaseModel):
    sweep: str
    law: LawName
    metric: str
    mode: str
    formula: str
    fitted_on: str
    parameters: dict[str, EstimateOut]
    undetermined: list[str] = Field(
        description="Parameters the data leave undetermined, reported on their search bound"
    )
    quality: dict[str, float | None] = Field(description="r_squared, or pearson_r for the tradeoff model")
    n_trials: int
    n_bootstrap: int
    n_bootstrap_ok: int
    snapshot_hash: str
    notes: list[str]
    curves: list[CurveOut]
    prediction: PredictionOut | None


class LawsOut(BaseModel):
    sweep: str
    metric: str
    mode: str
    laws: list[LawOut]
    refused: dict[str, str] = Field(description="Laws that cannot be fitted, with what the data lack")


# Predictions


class PredictionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: PositiveBudget | None = Field(None, description="The budget to predict at; default: 3x the sweep's largest")
    law: Literal["auto", "allocation", "surface", "tradeoff"] = Field(
        "auto", description="allocation: N*/k_e*/d_m*(P) with the metric from the frontier law; auto: the first of "
                            "allocation, surface, tradeoff that predicts the optimum"
    )
    n_bootstrap: int = Field(200, ge=20, le=1000, description="Bootstrap resamples for the intervals")


class IntervalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    value: float
    ci_low: float = Field(description="95 % interval")
    ci_high: float


class PredictedOptimumOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    law: str = Field(description="The law that made it: allocation+frontier, surface or tradeoff")
    d_m: IntervalOut
    n_hidden: IntervalOut
    k_e: IntervalOut
    metric: IntervalOut


class ObservedOptimumOut(BaseModel):
    """The optimum located among the finished trials at the prediction's budget (analysis.optimum)."""

    d_m: EstimateOut
    n_hidden: float | None
    k_e: float | None
    metric: EstimateOut
    method: Literal["parabola", "grid"]
    edge: Literal["low", "high"] | None = Field(description="The best allocation is the grid's first or last")
    best_d_m: float = Field(description="d_m of the best allocation (seeds averaged)")
    best_metric: float
    nearest_d_m: float = Field(description="d_m of the allocation nearest the predicted d_m")
    nearest_metric: float
    n_allocations: int
    n_trials: int


class PredictionScoreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    scored_at: datetime
    sweeps: list[str] = Field(description="The sweeps whose trials at the budget it was scored against")
    observed: ObservedOptimumOut
    d_m_inside: bool = Field(description="The observed optimum's d_m lies in the predicted interval")
    metric_inside: bool
    metric_error: float = Field(description="Predicted minus observed metric at the optimum")
    regret: float = Field(description="How much worse the allocation nearest the predicted d_m is than the best (>= 0)")


class PredictionRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    sweep: str = Field(description="The sweep whose trials below the budget it was fitted on")
    task: str
    experiment: dict[str, Any] = Field(description="What a sweep of the task shares with it to score it")
    metric: str
    mode: MetricMode
    budget: int
    n_bootstrap: int
    predicted: PredictedOptimumOut
    snapshot_hash: str = Field(description="sha256 of the trials it was fitted on (ids, allocations, values)")
    snapshot_trials: int
    snapshot_budgets: list[int]
    score: PredictionScoreOut | None = Field(description="Null until the trials at its budget have finished")


# Feed


class EventOut(BaseModel):
    """The `data:` of one Server-Sent Event; its `id:` is the event id and its `event:` the kind."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    kind: str
    sweep: str | None
    trial_id: str | None
    payload: dict[str, Any]


# Ingest


class IngestRow(BaseModel):
    """One trial computed elsewhere: its allocation, seed, and metric values (stored as final values)."""

    model_config = ConfigDict(extra="forbid")

    budget: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    n_hidden: Count
    d_m: Count
    d_mlp: Count
    l_mlp: Count
    d_tree: Count
    d_branch: Count
    rho_rec: Annotated[float, Field(ge=0.0, le=1.0)]
    k_e: Count
    k_c: Count
    params_total: Annotated[int, Field(ge=0, le=INT64_MAX)]
    seed: Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
    config: dict[str, Any] | None = Field(
        None, description="The trial's resolved config; default: its allocation columns. With the seed it fixes "
                          "the trial id."
    )
    status: FinishedStatus = TrialStatus.COMPLETED.value
    metrics: dict[MetricName, FiniteFloat | None] = Field(min_length=1, max_length=100)

    @field_validator("config")
    @classmethod
    def config_is_json(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        if config is not None:
            canonical_json(config)  # raises ValueError for NaN/inf or values JSON cannot hold
        return config

    @field_validator("metrics")
    @classmethod
    def some_metric_has_a_value(cls, metrics: dict[str, float | None]) -> dict[str, float | None]:
        if all(value is None for value in metrics.values()):
            raise ValueError("every metric value is empty: give at least one")
        return metrics


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[IngestRow] = Field(min_length=1, max_length=10_000)


class IngestOut(BaseModel):
    sweep: str
    created_sweep: bool
    trials: int
    trial_ids: list[str] = Field(description="Deterministic ids of the rows' trials, in the order given")
    overwritten: list[str] = Field(description="Ids of stored trials whose status or final values this request changed")


# Health


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str
    revision: str | None
    head: str
