"""Trial tables for analysis (pandas): one row per trial, each metric's summary as "<metric>.<stat>" columns,
and the sweep's metric as one plain column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import pandas as pd

from resultsdb.models import ALLOCATION_COLUMNS, MetricMode
from resultsdb.queries import SUMMARY_STATS, TRIAL_FRAME_COLUMNS

METRIC_COLUMN = "metric"


class MetricFrame(NamedTuple):
    """A summary frame with the metric's value per trial in METRIC_COLUMN: its final (test) value, else its best."""

    trials: pd.DataFrame
    metric: str
    mode: MetricMode


def summary_frame(trials: Sequence[tuple], summaries: Sequence[tuple], sweep_metric: str) -> pd.DataFrame:
    """Trial rows (TRIAL_FRAME_COLUMNS) joined with summary rows (trial id, metric, *SUMMARY_STATS), pivoted wide.

    Every stat column is numeric (float64; Int64 for steps) even where no trial has a value. A `<metric>.final`
    column appears for the sweep's metric and for metrics some trial has a final value of. Metrics named like an
    allocation column (the model's size, which trainers used to report with every window) are left out: the
    trial's own column holds that value.
    """
    # Plain tuples: pandas inspects Row objects one attribute at a time, ~10x slower on 10k trials.
    frame = pd.DataFrame([tuple(row) for row in trials], columns=list(TRIAL_FRAME_COLUMNS))
    frame["status"] = frame["status"].astype(object).map(str)  # plain strings, not enum members, in files
    long = pd.DataFrame([tuple(row) for row in summaries], columns=["id", "metric", *SUMMARY_STATS])
    long = long[~long["metric"].isin(ALLOCATION_COLUMNS)]
    if long.empty:
        return frame
    long = long.astype({stat: "Int64" if stat.endswith("_step") else "float64" for stat in SUMMARY_STATS})
    wide = long.pivot(index="id", columns="metric", values=list(SUMMARY_STATS))
    metrics = sorted(long["metric"].unique())
    with_final = {sweep_metric, *long.loc[long["final"].notna(), "metric"]}
    columns = [(stat, metric) for metric in metrics for stat in SUMMARY_STATS
               if stat != "final" or metric in with_final]
    wide = wide[columns]
    wide.columns = [f"{metric}.{stat}" for stat, metric in columns]
    return frame.merge(wide, how="left", left_on="id", right_index=True)


def metric_frame(summaries: pd.DataFrame, metric: str, mode: MetricMode) -> MetricFrame:
    final, best = f"{metric}.final", f"{metric}.best"
    if final in summaries:
        values = summaries[final].where(summaries[final].notna(), summaries.get(best))
    elif best in summaries:
        values = summaries[best]
    else:
        values = pd.Series(float("nan"), index=summaries.index)
    return MetricFrame(summaries.assign(**{METRIC_COLUMN: values.astype(float)}), metric, mode)
