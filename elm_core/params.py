"""Exact parameter accounting (DESIGN §2-3) and the fixed-budget solver, without building a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model import ELMConfig


def neuron_parameters(k_c: int, d_tree: int, d_m: int, d_mlp: int, l_mlp: int, learn_tau: bool = False) -> int:
    """Trainable parameters of one ELM neuron: synapses + MLP + readout weight w_y + bias (+ tau_m if learned)."""
    if l_mlp == 0:
        mlp = (d_tree + d_m) * d_m + d_m
    else:
        mlp = (d_tree + d_m) * d_mlp + d_mlp + (l_mlp - 1) * (d_mlp * d_mlp + d_mlp) + d_mlp * d_m + d_m
    return k_c + mlp + d_m + 1 + (d_m if learn_tau else 0)


@dataclass(frozen=True)
class ParameterCount:
    params_total: int  # P
    params_neuron: int  # P_n of one hidden neuron
    k_e: int  # per-neuron complexity: P_n - k_c
    k_c: int  # synapses per neuron
    params_hidden: int  # N * P_n
    params_readout: int  # n_out * P_n(readout)
    params_output: int  # n_out^2 + n_out


def count_parameters(cfg: ELMConfig) -> ParameterCount:
    hidden_neuron = neuron_parameters(cfg.k_c, cfg.d_tree, cfg.d_m, cfg.d_mlp, cfg.l_mlp, cfg.learn_tau)
    readout_neuron = neuron_parameters(
        cfg.k_c, cfg.d_tree, cfg.readout_d_m, 2 * cfg.readout_d_m, cfg.readout_l_mlp, cfg.learn_tau
    )
    hidden = cfg.n_hidden * hidden_neuron
    readout = cfg.n_output * readout_neuron
    output = cfg.n_output * cfg.n_output + cfg.n_output
    return ParameterCount(
        params_total=hidden + readout + output,
        params_neuron=hidden_neuron,
        k_e=hidden_neuron - cfg.k_c,
        k_c=cfg.k_c,
        params_hidden=hidden,
        params_readout=readout,
        params_output=output,
    )


class BudgetError(ValueError):
    """The budget cannot be met by any N >= 1 for the fixed axes."""


@dataclass(frozen=True)
class Allocation:
    config: ELMConfig
    budget: int
    params: ParameterCount

    @property
    def shortfall(self) -> float:
        """Relative distance of the achieved P below (positive) or above (negative) the budget."""
        return (self.budget - self.params.params_total) / self.budget


def solve_allocation(
    budget: float, base_cfg: ELMConfig, rule: Literal["floor", "nearest"] = "floor", **axis_values
) -> Allocation:
    """Fix the given axes (e.g. d_m=30) and solve N: the largest N whose P does not exceed the budget.

    P is affine in N (P = N * P_n + fixed), so N is closed-form. rule="nearest" picks whichever of N, N+1 lands
    closer to the budget.
    """
    budget = int(budget)
    cfg = base_cfg.replace(n_hidden=1, **axis_values)
    one = count_parameters(cfg)
    fixed = one.params_total - one.params_hidden
    n_hidden = (budget - fixed) // one.params_neuron
    if n_hidden < 1:
        raise BudgetError(
            f"budget {budget:,} is below the smallest network for {_describe(axis_values)}: "
            f"N=1 already needs {one.params_total:,} parameters"
        )
    if rule == "nearest":
        above = fixed + (n_hidden + 1) * one.params_neuron
        if above - budget < budget - (fixed + n_hidden * one.params_neuron):
            n_hidden += 1
    cfg = cfg.replace(n_hidden=int(n_hidden))
    return Allocation(config=cfg, budget=budget, params=count_parameters(cfg))


def _describe(axis_values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in axis_values.items()) or "the base config"
