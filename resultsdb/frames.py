"""Trial tables for analysis: one row per trial with the sweep's metric as a plain column."""

from __future__ import annotations

import pandas as pd

from resultsdb.store import NotFound, ResultsStore

METRIC_COLUMN = "metric"


def metric_frame(store: ResultsStore, sweep: str, metric: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """(trials, metric name, mode): a trial's value is its final (test) value, else its best reported value."""
    info = store.get_sweep(sweep)
    if info is None:
        raise NotFound(f"sweep {sweep!r} does not exist")
    metric = metric or info.metric
    mode = info.metric_modes.get(metric, info.mode)
    frame = store.summary_frame(sweep)
    final, best = f"{metric}.final", f"{metric}.best"
    if final in frame:
        values = frame[final].where(frame[final].notna(), frame.get(best))
    elif best in frame:
        values = frame[best]
    else:
        values = pd.Series(float("nan"), index=frame.index)
    return frame.assign(**{METRIC_COLUMN: values.astype(float)}), metric, mode
