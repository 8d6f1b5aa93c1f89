"""Results database of elmscale: models, migrations, and the one storage interface, ResultsStore.

This package root is resultsdb's public surface; `api/` and `orchestrator/` import nothing else of it.
"""

from resultsdb.engine import database_url, make_engine
from resultsdb.errors import (
    ConflictError,
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    InvalidQuery,
    NotFound,
    OverwriteRefused,
    SweepLeaseHeld,
    UnknownMetric,
)
from resultsdb.frames import METRIC_COLUMN, MetricFrame
from resultsdb.ids import canonical_json, trial_id
from resultsdb.migrate import current as schema_revision
from resultsdb.migrate import head as schema_head
from resultsdb.migrate import upgrade as upgrade_schema
from resultsdb.models import (
    ACTIVE_TRIAL_STATUSES,
    ALLOCATION_COLUMNS,
    CONFIG_COLUMNS,
    FINISHED_SWEEP_STATUSES,
    FINISHED_TRIAL_STATUSES,
    SUCCESSFUL_TRIAL_STATUSES,
    MetricMode,
    SweepStatus,
    TrialStatus,
)
from resultsdb.queries import SUMMARY_STATS, Range
from resultsdb.records import (
    DriverLease,
    EventInfo,
    IngestedTrials,
    Interval,
    MetricSummary,
    PredictedOptimum,
    PredictionInfo,
    PredictionScore,
    SeriesPoint,
    SweepInfo,
    TokenInfo,
    TrialInfo,
    TrialPage,
    ingested_spec_text,
)
from resultsdb.store import ResultsStore

__all__ = [
    "ACTIVE_TRIAL_STATUSES",
    "ALLOCATION_COLUMNS",
    "CONFIG_COLUMNS",
    "ConflictError",
    "DatabaseUnavailable",
    "DriverLease",
    "EventInfo",
    "FINISHED_SWEEP_STATUSES",
    "FINISHED_TRIAL_STATUSES",
    "IngestedTrials",
    "Interval",
    "InvalidDatabaseUrl",
    "InvalidQuery",
    "METRIC_COLUMN",
    "MetricFrame",
    "MetricMode",
    "MetricSummary",
    "NotFound",
    "OverwriteRefused",
    "PredictedOptimum",
    "PredictionInfo",
    "PredictionScore",
    "Range",
    "ResultsStore",
    "SUCCESSFUL_TRIAL_STATUSES",
    "SUMMARY_STATS",
    "SeriesPoint",
    "SweepInfo",
    "SweepLeaseHeld",
    "SweepStatus",
    "TokenInfo",
    "TrialInfo",
    "TrialPage",
    "TrialStatus",
    "UnknownMetric",
    "canonical_json",
    "database_url",
    "ingested_spec_text",
    "make_engine",
    "schema_head",
    "schema_revision",
    "trial_id",
    "upgrade_schema",
]
