"""Figures (PNG and SVG): the frontier with its law, the metric along each budget's sweep with the model curves
and located optima, and the optimum's trajectory across budgets with the allocation laws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the API and CLI run without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from analysis.frontier import aggregate_seeds, frontier, per_budget_optimum  # noqa: E402
from analysis.laws import LawReport  # noqa: E402
from analysis.optimum import BudgetOptima  # noqa: E402


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


def _plain(value: float, _position=None) -> str:
    return f"{value:g}"


def _two_and_five(value: float, _position=None) -> str:
    """Minor log ticks labelled at 2 and 5 of each decade only, so that they do not overlap."""
    leading = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if leading in (2, 5) else ""


def _readable_log_axes(ax) -> None:
    """Plain numbers (2, 5, 10, 20) on log axes rather than 2×10^0."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(FuncFormatter(_two_and_five))


def _band(ax, curve, color: str, label: str, style: str = "-") -> None:
    """A law's curve (points x, y, low, high) and its 95 % band."""
    points = np.array(curve.points, dtype=float)
    ax.plot(points[:, 0], points[:, 1], style, color=color, lw=1.4, label=label)
    if np.isfinite(points[:, 2:]).all():
        ax.fill_between(points[:, 0], points[:, 2], points[:, 3], color=color, alpha=0.15, lw=0)


def plot_frontier(df: pd.DataFrame, metric: str, mode: str, path: str | Path, law: LawReport | None = None,
                  cost: str = "params_total") -> list[Path]:
    """All seed-averaged allocations, the frontier (each budget's best, or strict Pareto), the frontier law's band."""
    return _save(frontier_figure(df, metric, mode, law=law, cost=cost), path)


def frontier_figure(df: pd.DataFrame, metric: str, mode: str, law: LawReport | None = None,
                    cost: str = "params_total") -> Figure:
    """The figure of `plot_frontier`: a frontier point is a blue ring drawn around its allocation's grey dot."""
    table = aggregate_seeds(df, metric)
    kind, front = frontier(df, metric, mode, cost=cost)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(front[cost], front[metric], "o", color="C0", mfc="none", mew=1.6, ms=9, zorder=4,
            label="best allocation per budget" if kind == "per_budget" else "Pareto frontier")
    ax.scatter(table[cost], table[metric], s=12, color="0.55", zorder=3, label="allocations (seed mean)")
    if law is not None:
        E, A, alpha = (law.parameters[name].value for name in ("E", "A", "alpha"))
        sign = "+" if mode == "min" else "−"
        _band(ax, law.curves[0], "C3", f"{E:.4g} {sign} {A:.4g}·P^(−{alpha:.4g}) (95% band)")
    ax.set(xscale="log", xlabel=f"{cost} (P)", ylabel=metric, title=f"{metric} frontier")
    ax.legend(fontsize=8)
    return fig


def plot_metric_vs_allocation(df: pd.DataFrame, metric: str, mode: str, path: str | Path, axis: str = "d_m",
                              optima: BudgetOptima | None = None, models: Sequence[LawReport] = ()) -> list[Path]:
    """Metric against the swept axis, one colour per budget (seed mean ± std), the model curves of that budget
    (surface dashed, tradeoff dotted), and each budget's located optimum with its 95 % intervals."""
    table = aggregate_seeds(df, metric)
    budgets = sorted(table["budget"].dropna().unique())
    located = {o.budget: o for o in optima.optima} if optima is not None and optima.axis == axis else {}
    styles = {"surface": "--", "tradeoff": ":"}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for color, budget in zip(plt.cm.viridis(np.linspace(0, 0.9, len(budgets))), budgets):
        group = table[table["budget"] == budget].sort_values(axis)
        ax.errorbar(group[axis], group[metric], yerr=group[f"{metric}_std"].fillna(0), color=color, marker="o",
                    ms=3, capsize=2, lw=1, label=f"P = {budget:.3g}")
        for model in models:
            for curve in model.curves:
                if curve.budget == budget and curve.x == axis:
                    points = np.array(curve.points, dtype=float)
                    ax.plot(points[:, 0], points[:, 1], styles[model.law], color=color, lw=1)
        if (optimum := located.get(float(budget))) is not None:
            x, y = optimum.value(axis), optimum.metric
            xerr = [[x.value - x.ci_low], [x.ci_high - x.value]] if np.isfinite([x.ci_low, x.ci_high]).all() else None
            yerr = [[y.value - y.ci_low], [y.ci_high - y.value]] if np.isfinite([y.ci_low, y.ci_high]).all() else None
            ax.errorbar([x.value], [y.value], xerr=xerr, yerr=yerr, fmt="*", color="gold", mec="k", ms=13,
                        ecolor="k", elinewidth=1, capsize=3, zorder=5)
    for model in models:
        ax.plot([], [], styles[model.law], color="0.3", label=f"{model.law} model")
    ax.plot([], [], "*", color="gold", mec="k", ms=11, label="located optimum (95%)")
    ax.set(xscale="log", xlabel=axis, ylabel=metric, title=f"{metric} vs {axis} at fixed budget")
    _readable_log_axes(ax)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_optimum_trajectory(df: pd.DataFrame, metric: str, mode: str, path: str | Path,
                            columns: tuple[str, ...] = ("d_m", "n_hidden", "k_e"), optima: BudgetOptima | None = None,
                            law: LawReport | None = None) -> list[Path]:
    """Each budget's optimum (located with its interval, else the best allocation) per column, and the
    allocation law's curve and band when given."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 4), squeeze=False)
    best = per_budget_optimum(df, metric, mode)
    for ax, column in zip(axes[0], columns):
        if optima is not None:
            estimates = [o.value(column) for o in optima.optima]
            value = np.array([e.value for e in estimates])
            low = np.array([e.ci_low for e in estimates])
            high = np.array([e.ci_high for e in estimates])
            open_side = ~np.isfinite(low) | ~np.isfinite(high)
            err = np.where(open_side, 0, [value - low, high - value])
            ax.errorbar(optima.budgets, value, yerr=err, fmt="o", color="C0", capsize=3, label="located optimum (95%)")
            if open_side.any():
                ax.plot(optima.budgets[open_side], value[open_side], "x", color="C1", ms=9, label="at the grid's edge")
        else:
            ax.plot(best["budget"], best[column], "o", color="C0", label="best allocation")
        curve = None if law is None else next((c for c in law.curves if c.y == column), None)
        if law is not None and curve is not None:
            exponent = law.parameters[f"{column}.exponent"].value
            _band(ax, curve, "C3", f"{column}* ∝ P^{exponent:.3g}")
        ax.set(xscale="log", yscale="log", xlabel="budget P", ylabel=f"optimal {column}")
        _readable_log_axes(ax)
        ax.legend(fontsize=8)
    fig.suptitle(f"optimum of {metric} across budgets")
    return _save(fig, path)
