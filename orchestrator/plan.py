"""Expand a sweep spec into concrete trials: budgets x allocation grid x seeds, N solved per budget."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from elm_core.data import DatasetError, task_shape
from elm_core.model import ELMConfig
from elm_core.params import BudgetError, ParameterCount, solve_allocation
from resultsdb import trial_id

from .spec import SpecError, SweepSpec


@dataclass(frozen=True)
class TrialPlan:
    trial_id: str
    budget: float
    seed: int
    axes: dict
    model: ELMConfig
    params: ParameterCount
    shortfall: float
    train_config: dict  # an elm_core.train.TrainConfig as a dict

    def row(self) -> dict:
        """The trial as the results store records it (allocation columns + full config)."""
        return {
            "config": self.train_config,
            "seed": self.seed,
            "budget": self.budget,
            "n_hidden": self.model.n_hidden,
            "d_m": self.model.d_m,
            "d_mlp": self.model.d_mlp,
            "l_mlp": self.model.l_mlp,
            "d_tree": self.model.d_tree,
            "d_branch": self.model.d_branch,
            "rho_rec": self.model.rho_rec,
            "k_e": self.params.k_e,
            "k_c": self.params.k_c,
            "params_total": self.params.params_total,
        }


def plan(spec: SweepSpec, source: str = "<spec>") -> list[TrialPlan]:
    """All trials of the sweep, in budget, allocation, seed order. Raises SpecError naming every problem.

    The standard datasets' shapes are known, so planning them reads no data; `source` names the spec in errors.
    """
    try:
        n_input, n_output = task_shape(spec.task, spec.task_options)
    except DatasetError as error:
        raise SpecError([f"{source}: task: {error}"]) from None
    try:
        base = ELMConfig(**{**spec.allocation.fixed, "n_input": n_input, "n_output": n_output})
    except (ValueError, TypeError) as error:
        raise SpecError([f"{source}: allocation.fixed: {error}"]) from None
    try:
        axis_values = spec.allocation.axis_values()
    except ValueError as error:
        raise SpecError([f"{source}: allocation.vary: {error}"]) from None

    names = list(axis_values)
    trials, problems, infeasible = [], [], []
    for budget in spec.budgets:
        for combo in itertools.product(*(axis_values[n] for n in names)):
            axes = dict(zip(names, combo))
            try:
                allocation = solve_allocation(budget, base, rule=spec.allocation.rule, **axes)
            except BudgetError as error:
                if not spec.allocation.skip_infeasible:
                    infeasible.append(f"{source}: budgets: {budget:g} with {_axes(axes)}: {error}")
                continue
            except ValueError as error:
                problems.append(f"{source}: allocation.vary: {_axes(axes)}: {error}")
                continue
            for seed in spec.seeds:
                model = allocation.config.replace(seed=seed)
                model_fields = {k: v for k, v in model.to_dict().items() if k not in ("n_input", "n_output", "seed")}
                train_config = {
                    **spec.training,
                    "task": spec.task,
                    "task_options": spec.task_options,
                    "model": model_fields,
                    "seed": seed,
                }
                trials.append(
                    TrialPlan(
                        trial_id=trial_id(spec.name, train_config, seed),
                        budget=budget,
                        seed=seed,
                        axes=axes,
                        model=model,
                        params=allocation.params,
                        shortfall=allocation.shortfall,
                        train_config=train_config,
                    )
                )
    if infeasible:
        problems += [*infeasible, f"{source}: allocation.skip_infeasible: true skips the allocations that do not fit "
                                  "a budget and runs the rest"]
    if problems:
        raise SpecError(problems)
    if not trials:
        raise SpecError([f"{source}: allocation: the grid is empty: no allocation fits any budget"])
    return trials


def _axes(axes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items())
