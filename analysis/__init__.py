"""Pareto frontier, scaling-law and tradeoff-model fits over trial tables (numpy/scipy/pandas only)."""

from analysis.fitting import Estimate, FitError
from analysis.frontier import aggregate_seeds, frontier, frontier_kind, pareto_frontier, per_budget_optimum
from analysis.optimum import BudgetOptima, LocatedOptimum, locate_optima
from analysis.predictions import BudgetPrediction, predict_optimum, score_prediction
from analysis.scaling import (
    AllocationLawFit,
    FrontierLawFit,
    fit_allocation_law,
    fit_allocation_laws,
    fit_frontier_law,
)
from analysis.suggest import next_budget, suggest_next_sweep
from analysis.surface import AllocationPrediction, SurfaceFit, fit_surface, predict_allocation
from analysis.tradeoff import TradeoffFit, fit_tradeoff, predict_tradeoff_allocation

__all__ = [
    "AllocationLawFit", "AllocationPrediction", "BudgetOptima", "BudgetPrediction", "Estimate", "FitError",
    "FrontierLawFit", "SurfaceFit", "TradeoffFit", "aggregate_seeds", "fit_allocation_law", "fit_allocation_laws",
    "fit_frontier_law",
    "fit_surface", "fit_tradeoff", "frontier", "frontier_kind", "LocatedOptimum", "locate_optima", "next_budget",
    "pareto_frontier", "per_budget_optimum", "predict_allocation", "predict_optimum",
    "predict_tradeoff_allocation", "score_prediction", "suggest_next_sweep",
]
