"""Figures (PNG and SVG): frontier with its law, metric along each budget's sweep, optimum trajectory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the API and CLI run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.frontier import aggregate_seeds, pareto_frontier, per_budget_optimum  # noqa: E402
from analysis.scaling import AllocationLawFit, FrontierLawFit  # noqa: E402


def _save(fig, path: str | Path) -> list[Path]:
    """Write `path` with .png and .svg suffixes (any given suffix is replaced)."""
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        fig.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def plot_frontier(df: pd.DataFrame, metric: str, mode: str, path: str | Path, fit: FrontierLawFit | None = None,
                  cost: str = "params_total") -> list[Path]:
    """All seed-averaged allocations, the Pareto frontier, and the fitted law with its 95% band."""
    table = aggregate_seeds(df, metric)
    front = pareto_frontier(table, cost=cost, metric=metric, mode=mode)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(table[cost], table[metric], s=12, color="0.7", label="allocations (seed mean)")
    ax.plot(front[cost], front[metric], "o", color="C0", label="Pareto frontier")
    if fit is not None:
        grid = np.geomspace(table[cost].min(), table[cost].max() * 3, 200)
        low, high = fit.predict_band(grid)
        sign = "+" if mode == "min" else "−"
        ax.plot(grid, fit.predict(grid), color="C3",
                label=f"{fit.E.value:.3g} {sign} {fit.A.value:.3g}·P^(−{fit.alpha.value:.3g})")
        ax.fill_between(grid, low, high, color="C3", alpha=0.2, label="95% bootstrap band")
    ax.set(xscale="log", xlabel=f"{cost} (P)", ylabel=metric, title=f"{metric} frontier")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_metric_vs_allocation(df: pd.DataFrame, metric: str, mode: str, path: str | Path,
                              axis: str = "d_m") -> list[Path]:
    """Metric against the swept axis, one line per budget (seed mean ± std), each budget's optimum starred."""
    table = aggregate_seeds(df, metric)
    optima = per_budget_optimum(df, metric, mode)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for color, (budget, group) in zip(plt.cm.viridis(np.linspace(0, 0.9, table["budget"].nunique())),
                                      table.groupby("budget", sort=True)):
        group = group.sort_values(axis)
        ax.errorbar(group[axis], group[metric], yerr=group[f"{metric}_std"].fillna(0), color=color, marker="o",
                    ms=3, capsize=2, label=f"P = {budget:.3g}")
        best = optima.loc[optima["budget"] == budget]
        ax.plot(best[axis], best[metric], "*", color="gold", mec="k", ms=14, zorder=5)
    ax.set(xscale="log", xlabel=axis, ylabel=metric, title=f"{metric} vs {axis} at fixed budget (★ optimum)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_optimum_trajectory(df: pd.DataFrame, metric: str, mode: str, path: str | Path,
                            columns: tuple[str, ...] = ("n_hidden", "k_e"),
                            laws: dict[str, AllocationLawFit] | None = None) -> list[Path]:
    """Optimal allocation per budget (one panel per column), with fitted allocation laws and bands if given."""
    optima = per_budget_optimum(df, metric, mode)
    fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.plot(optima["budget"], optima[column], "o", color="C0", label="best allocation")
        law = (laws or {}).get(column)
        if law is not None:
            grid = np.geomspace(optima["budget"].min(), optima["budget"].max() * 3, 100)
            low, high = law.predict_interval(grid)
            ax.plot(grid, law.predict(grid), color="C3",
                    label=f"{law.coefficient.value:.3g}·P^{law.exponent.value:.3g}")
            ax.fill_between(grid, low, high, color="C3", alpha=0.2)
        ax.set(xscale="log", yscale="log", xlabel="budget P", ylabel=f"optimal {column}")
        ax.legend(fontsize=8)
    fig.suptitle(f"optimum of {metric} across budgets")
    return _save(fig, path)
