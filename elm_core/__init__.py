"""PyTorch ELM Network, parameter accounting, budget solver, datasets and trainer (torch/numpy only)."""

from .model import ELMConfig, ELMNetwork, ELMOutput, ELMState
from .params import Allocation, BudgetError, ParameterCount, count_parameters, solve_allocation

__all__ = [
    "Allocation", "BudgetError", "ELMConfig", "ELMNetwork", "ELMOutput", "ELMState", "ParameterCount",
    "count_parameters", "solve_allocation",
]
