"""Results database of elmscale: models, migrations, and the one storage interface, ResultsStore."""

from resultsdb.engine import DatabaseUnavailable, database_url, make_engine
from resultsdb.ids import trial_id
from resultsdb.models import MetricMode, SweepStatus, TrialStatus
from resultsdb.queries import Range
from resultsdb.store import (
    ConflictError,
    EventInfo,
    NotFound,
    ResultsStore,
    SeriesPoint,
    SweepInfo,
    TokenInfo,
    TrialPage,
)

__all__ = [
    "ConflictError",
    "DatabaseUnavailable",
    "EventInfo",
    "MetricMode",
    "NotFound",
    "Range",
    "ResultsStore",
    "SeriesPoint",
    "SweepInfo",
    "SweepStatus",
    "TokenInfo",
    "TrialPage",
    "TrialStatus",
    "database_url",
    "make_engine",
    "trial_id",
]
