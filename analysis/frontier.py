"""Pareto frontier of metric against cost, seed aggregation, and the best allocation per budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.fitting import FitError, check_mode, finite_rows, require_columns

# Columns that define an allocation (a trial's configuration apart from its seed). Only those present are used.
CONFIG_COLUMNS = ("budget", "n_hidden", "d_m", "d_mlp", "l_mlp", "d_tree", "d_branch", "k_e", "k_c",
                  "rho_rec", "params_total")


def config_columns_of(df: pd.DataFrame, config_columns: Sequence[str] | None = None) -> list[str]:
    """The allocation-defining columns present in `df` (or the caller's explicit list, checked)."""
    if config_columns is None:
        columns = [c for c in CONFIG_COLUMNS if c in df.columns]
    else:
        require_columns(df, config_columns)
        columns = [c for c in config_columns if c != "seed"]
    if not columns:
        raise FitError(f"trials have none of the config columns {list(CONFIG_COLUMNS)}")
    return columns


def frontier_mask(cost: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Boolean mask of non-dominated points (lower cost, lower key are better); O(n log n).

    A point is kept when no other point has cost <= and key <= with one of them strict; exact duplicates
    of a frontier point are all kept.
    """
    n = len(cost)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort((key, cost))
    sorted_cost, sorted_key = cost[order], key[order]
    starts = np.r_[True, sorted_cost[1:] != sorted_cost[:-1]]
    group = np.cumsum(starts) - 1
    group_best = sorted_key[starts]  # first of each equal-cost group is its best (sorted by key)
    best_before = np.r_[np.inf, np.minimum.accumulate(group_best)[:-1]]
    mask[order] = (sorted_key == group_best[group]) & (sorted_key < best_before[group])
    return mask


def metric_key(values: np.ndarray, mode: str) -> np.ndarray:
    """Metric as 'lower is better'."""
    return values if check_mode(mode) == "min" else -values


def pareto_frontier(df: pd.DataFrame, cost: str = "params_total", metric: str = "metric",
                    mode: str = "min") -> pd.DataFrame:
    """Rows of `df` not dominated in (cost lower, metric better), sorted by cost; rows with NaN are skipped."""
    rows = finite_rows(df, [cost, metric])
    mask = frontier_mask(rows[cost].to_numpy(dtype=float), metric_key(rows[metric].to_numpy(dtype=float), mode))
    return rows.loc[mask].sort_values([cost, metric], kind="stable")


FRONTIER_KINDS = ("auto", "per_budget", "pareto")


def frontier_kind(df: pd.DataFrame, requested: str = "auto", config_columns: Sequence[str] | None = None) -> str:
    """Which frontier a trial table has: "per_budget" or "pareto" (`requested` checked; "auto" chooses).

    A fixed-budget sweep's allocations each land a little under their budget, so a strict Pareto set over
    exact P keeps nearly all of them: there the frontier is each budget's optimum. "auto" chooses that
    when every trial has a budget and some budget holds two or more allocations, else strict Pareto over P.
    """
    if requested not in FRONTIER_KINDS:
        raise FitError(f"frontier must be one of {', '.join(FRONTIER_KINDS)}, got {requested!r}")
    has_budgets = "budget" in df.columns and len(df) > 0 and bool(df["budget"].notna().all())
    if requested == "per_budget" and not has_budgets:
        missing = int(df["budget"].isna().sum()) if "budget" in df.columns else len(df)
        raise FitError(f"a per-budget frontier needs a budget on every trial; {missing} have none")
    if requested != "auto":
        return requested
    if not has_budgets:
        return "pareto"
    allocations = df.drop_duplicates(config_columns_of(df, config_columns))
    return "per_budget" if allocations.groupby("budget").size().max() >= 2 else "pareto"


def frontier(df: pd.DataFrame, metric: str, mode: str, kind: str = "auto", cost: str = "params_total",
             config_columns: Sequence[str] | None = None) -> tuple[str, pd.DataFrame]:
    """(kind, frontier rows of seed-averaged allocations): each budget's best, or the strict Pareto set over `cost`."""
    table = aggregate_seeds(df, metric, config_columns)
    kind = frontier_kind(table, kind, config_columns)
    if kind == "pareto":
        return kind, pareto_frontier(table, cost, metric, mode)
    table = table.assign(_key=metric_key(table[metric].to_numpy(dtype=float), mode))
    best = table.sort_values(["budget", "_key"], kind="stable").groupby("budget", sort=True).head(1)
    return kind, best.drop(columns="_key").reset_index(drop=True)


def aggregate_seeds(df: pd.DataFrame, metric: str, config_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per allocation: `metric` becomes the mean over seeds, plus `{metric}_std` and `n_seeds`.

    The allocation is every config column except seed (default: those of CONFIG_COLUMNS present).
    The std uses ddof=1 and is NaN for a single seed. Trials with a NaN metric are skipped.
    """
    columns = config_columns_of(df, config_columns)
    rows = finite_rows(df, [metric])
    grouped = rows.groupby(columns, sort=True, dropna=False)[metric]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": metric, "std": f"{metric}_std", "count": "n_seeds"})


def per_budget_optimum(df: pd.DataFrame, metric: str, mode: str, aggregate_seeds: bool = True,
                       config_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Best allocation and runner-up at each budget, one row per budget sorted by budget.

    Columns: the config columns and metric of the best allocation (with `{metric}_std`, `n_seeds` when
    aggregated), `runner_up_<col>` for each config column and the metric, `n_allocations`, and `gap`
    (how much worse the runner-up is, >= 0; NaN when the budget has one allocation).
    """
    check_mode(mode)
    require_columns(df, ["budget", metric])
    table = _aggregate(df, metric, config_columns) if aggregate_seeds else finite_rows(df, [metric])
    if table.empty:
        raise FitError(f"no trials with a finite {metric!r}")
    columns = config_columns_of(table, config_columns)
    table = table.assign(_key=metric_key(table[metric].to_numpy(dtype=float), mode))
    ranked = table.sort_values(["budget", "_key"], kind="stable").groupby("budget", sort=True)
    best = ranked.nth(0).set_index("budget")
    runner_up = ranked.nth(1).set_index("budget")
    out = best.drop(columns="_key")
    detail = [c for c in columns if c != "budget"] + [metric]
    for col in detail:
        out[f"runner_up_{col}"] = runner_up[col].reindex(out.index)
    out["n_allocations"] = ranked.size()
    out["gap"] = runner_up["_key"].reindex(out.index) - best["_key"]
    return out.reset_index()


# per_budget_optimum's flag `aggregate_seeds` shadows the function of that name inside it.
_aggregate = aggregate_seeds
