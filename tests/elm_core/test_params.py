"""Budget solver: hits budgets over a wide grid, never exceeds them, and refuses impossible ones clearly."""

import pytest

from elm_core.model import ELMConfig
from elm_core.params import BudgetError, count_parameters, solve_allocation

BASE = ELMConfig()


@pytest.mark.parametrize("budget", [1e4, 3e4, 1e5, 3.5e6, 1e7, 1e8])
@pytest.mark.parametrize("d_m", [2, 5, 15, 40, 100])
def test_solver_never_exceeds_budget_and_is_the_largest_n(budget, d_m):
    try:
        allocation = solve_allocation(budget, BASE, d_m=d_m)
    except BudgetError:
        assert count_parameters(BASE.replace(d_m=d_m, n_hidden=1)).params_total > budget
        return
    assert allocation.params.params_total <= budget
    assert allocation.config.d_m == d_m and allocation.config.d_mlp == 2 * d_m
    one_more = count_parameters(allocation.config.replace(n_hidden=allocation.config.n_hidden + 1))
    assert one_more.params_total > budget
    assert 0 <= allocation.shortfall < 1


def test_reference_budget_recovers_reference_n():
    allocation = solve_allocation(3_516_748, BASE, d_m=15)
    assert allocation.config.n_hidden == 1024
    assert allocation.shortfall == 0


def test_nearest_rule_may_go_above_when_closer():
    floor = solve_allocation(3_516_748 + 3000, BASE, d_m=15)
    nearest = solve_allocation(3_516_748 + 3000, BASE, rule="nearest", d_m=15)
    assert floor.config.n_hidden == 1024
    assert nearest.config.n_hidden == 1025  # one neuron is 3,430 parameters: 430 above beats 3,000 below


def test_several_axes_at_once():
    allocation = solve_allocation(1e6, BASE, d_branch=10, rho_rec=0.5)
    assert allocation.config.k_c == 500 and allocation.config.rho_rec == 0.5


def test_infeasible_budget_names_the_axes_and_the_minimum():
    with pytest.raises(BudgetError, match=r"d_m=100.*N=1 already needs"):
        solve_allocation(1e4, BASE, d_m=100)
