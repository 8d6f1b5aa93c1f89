"""Tables of the results database as SQLAlchemy 2.0 typed models.

Only ``resultsdb`` touches these; everything else goes through ``resultsdb.ResultsStore``. Statuses and
modes are enum columns stored as their values (VARCHAR, no CHECK constraint: a new status needs no migration).
Times are stored as timezone-aware UTC datetimes, except the wall time of a metric point, which
is a float of seconds since the epoch as the trainer reports it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Event ids must autoincrement on SQLite, where only INTEGER PRIMARY KEY aliases the rowid.
EventId = BigInteger().with_variant(Integer(), "sqlite")


def byte_ordered(length: int) -> String:
    """Keys compared byte-wise on Postgres ("C" collation; SQLite always does): trial ids and metric
    names need no locale rules, and locale comparisons made index inserts and sorts several times slower."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


TrialKey = byte_ordered(32)
MetricName = byte_ordered(100)

ALLOCATION_COLUMNS = (
    "budget",
    "n_hidden",
    "d_m",
    "d_mlp",
    "l_mlp",
    "d_tree",
    "d_branch",
    "rho_rec",
    "k_e",
    "k_c",
    "params_total",
    "seed",
)
# What tells allocations apart in the analyses: a trial's allocation apart from its seed.
CONFIG_COLUMNS = tuple(column for column in ALLOCATION_COLUMNS if column != "seed")


class TrialStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED_EARLY = "stopped_early"


# The trial ended (its ended_at is set); a sweep's progress counts these.
FINISHED_TRIAL_STATUSES = frozenset({TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.STOPPED_EARLY})
# The trial ended without failing (a scheduler's early stop is an outcome): a resume leaves these alone.
SUCCESSFUL_TRIAL_STATUSES = frozenset({TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY})
# The trial is still to run or running: a sweep with any such trial is not complete.
ACTIVE_TRIAL_STATUSES = frozenset({TrialStatus.PENDING, TrialStatus.RUNNING})


class SweepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


# The sweep ended (its finished_at is set); `orchestrator resume` restarts a stopped one.
FINISHED_SWEEP_STATUSES = frozenset({SweepStatus.COMPLETED, SweepStatus.FAILED, SweepStatus.STOPPED})


class MetricMode(enum.StrEnum):
    MIN = "min"
    MAX = "max"


def stored_by_value(members: type[enum.StrEnum], length: int) -> Enum:
    """The enum's values (not its member names) in a VARCHAR(length); reads return members."""
    return Enum(
        members,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda enum_type: [member.value for member in enum_type],
    )


class Base(DeclarativeBase):
    # Named constraints keep migrations reproducible across backends.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Sweep(Base):
    __tablename__ = "sweep"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    mode: Mapped[MetricMode] = mapped_column(stored_by_value(MetricMode, 8))
    # Mode of every reported metric whose "best" is kept; metrics not listed follow `mode`.
    metric_modes: Mapped[dict[str, str]] = mapped_column(JSON)
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[SweepStatus] = mapped_column(stored_by_value(SweepStatus, 16))
    code_version: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Trial(Base):
    __tablename__ = "trial"

    id: Mapped[str] = mapped_column(TrialKey, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    budget: Mapped[int | None] = mapped_column(BigInteger)
    n_hidden: Mapped[int] = mapped_column(Integer)
    d_m: Mapped[int] = mapped_column(Integer)
    d_mlp: Mapped[int] = mapped_column(Integer)
    l_mlp: Mapped[int] = mapped_column(Integer)
    d_tree: Mapped[int] = mapped_column(Integer)
    d_branch: Mapped[int] = mapped_column(Integer)
    rho_rec: Mapped[float] = mapped_column(Double)
    k_e: Mapped[int] = mapped_column(Integer)
    k_c: Mapped[int] = mapped_column(Integer)
    params_total: Mapped[int] = mapped_column(BigInteger)
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[TrialStatus] = mapped_column(stored_by_value(TrialStatus, 16))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current status was reported; a replayed, older status change is ignored.
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Every query is scoped to one sweep, so each filterable column is indexed behind sweep_id.
    __table_args__ = (
        Index(None, "sweep_id", "status"),
        *(Index(None, "sweep_id", column) for column in ALLOCATION_COLUMNS),
    )


class MetricPoint(Base):
    """One reported value; the narrow primary key is the only index (writes dominate).

    No foreign key to trial: its per-row check cost as much as the insert itself, and the writer
    already refuses points of unknown trials (it resolves every trial before writing).
    """

    __tablename__ = "metric_series"

    trial_id: Mapped[str] = mapped_column(TrialKey, primary_key=True)
    metric: Mapped[str] = mapped_column(MetricName, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL where the trainer reported NaN (SQLite cannot store NaN).
    value: Mapped[float | None] = mapped_column(Double)
    wall_time: Mapped[float] = mapped_column(Double)


class TrialSummary(Base):
    """Per (trial, metric) aggregates kept by the writer, so queries never scan the series."""

    __tablename__ = "trial_summary"

    trial_id: Mapped[str] = mapped_column(
        TrialKey, ForeignKey("trial.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(MetricName, primary_key=True)
    last_step: Mapped[int | None] = mapped_column(Integer)
    last_value: Mapped[float | None] = mapped_column(Double)
    last_wall_time: Mapped[float | None] = mapped_column(Double)
    min_value: Mapped[float | None] = mapped_column(Double)
    max_value: Mapped[float | None] = mapped_column(Double)
    best_value: Mapped[float | None] = mapped_column(Double)
    best_step: Mapped[int | None] = mapped_column(Integer)
    final_value: Mapped[float | None] = mapped_column(Double)

    # On Postgres "the best value of every trial" (frontiers, sorting by "<metric>.best") reads only
    # this index: every batch rewrites summary rows, which leaves the table mostly free space.
    __table_args__ = (Index(None, "metric", "trial_id", postgresql_include=["best_value"]),)


class Event(Base):
    """Append-only feed; ids grow in commit order (see ``writes.append_events``)."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    trial_id: Mapped[str | None] = mapped_column(TrialKey)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index(None, "sweep_id", "id"),)


class SweepLease(Base):
    """The driver that runs a sweep, at most one (see ``ResultsStore.acquire_lease``); `holder` names one
    acquisition, so that two drivers of one process are told apart."""

    __tablename__ = "sweep_lease"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Prediction(Base):
    """The optimum a law predicted at a budget from a sweep's trials below it, and once trials at that budget have
    finished in a sweep of the same experiment, its score (see resultsdb.predictions)."""

    __tablename__ = "prediction"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweep.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(100))
    budget: Mapped[int] = mapped_column(BigInteger)
    law: Mapped[str] = mapped_column(String(32))
    n_bootstrap: Mapped[int] = mapped_column(Integer)
    # The prediction: each value with its 95 % interval.
    d_m: Mapped[float] = mapped_column(Double)
    d_m_low: Mapped[float] = mapped_column(Double)
    d_m_high: Mapped[float] = mapped_column(Double)
    n_hidden: Mapped[float] = mapped_column(Double)
    n_hidden_low: Mapped[float] = mapped_column(Double)
    n_hidden_high: Mapped[float] = mapped_column(Double)
    k_e: Mapped[float] = mapped_column(Double)
    k_e_low: Mapped[float] = mapped_column(Double)
    k_e_high: Mapped[float] = mapped_column(Double)
    metric_value: Mapped[float] = mapped_column(Double)
    metric_low: Mapped[float] = mapped_column(Double)
    metric_high: Mapped[float] = mapped_column(Double)
    # The data it was fitted on: a hash of its trials (ids, allocations, values), their count and budgets.
    snapshot_hash: Mapped[str] = mapped_column(String(64))
    snapshot_trials: Mapped[int] = mapped_column(Integer)
    snapshot_budgets: Mapped[list[int]] = mapped_column(JSON)
    # The score, NULL until the trials at the budget have finished; observed_hash names the trials scored against.
    scored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    observed_hash: Mapped[str | None] = mapped_column(String(64))
    observed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    d_m_inside: Mapped[bool | None] = mapped_column(Boolean)
    metric_inside: Mapped[bool | None] = mapped_column(Boolean)
    metric_error: Mapped[float | None] = mapped_column(Double)
    regret: Mapped[float | None] = mapped_column(Double)

    # The same prediction made again from the same data is this row, not a second one.
    __table_args__ = (UniqueConstraint("sweep_id", "metric", "budget", "law", "n_bootstrap", "snapshot_hash"),)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
