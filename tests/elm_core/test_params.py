"""Budget solver: hits budgets over a wide grid, never exceeds them, and refuses impossible ones clearly."""

import pytest

from elm_core.model import ELMConfig
from elm_core.params import BudgetError, count_parameters, neuron_parameters, solve_allocation

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
    assert nearest.config.n_hidden == 1025  # one neuron is 3,211 parameters: 211 above beats 3,000 below


def test_several_axes_at_once():
    allocation = solve_allocation(1e6, BASE, d_branch=10, rho_rec=0.5)
    assert allocation.config.k_c == 500 and allocation.config.rho_rec == 0.5


def test_infeasible_budget_names_the_axes_and_the_minimum():
    with pytest.raises(BudgetError, match=r"d_m=100.*N=1 already needs"):
        solve_allocation(1e4, BASE, d_m=100)


def test_nearest_rule_stays_below_when_closer_and_keeps_the_smaller_n_on_a_tie():
    closer_below = solve_allocation(3_516_748 + 500, BASE, rule="nearest", d_m=15)  # 500 below, 2,711 above
    assert closer_below.config.n_hidden == 1024
    learned_tau = BASE.replace(learn_tau=True)  # one more parameter per state: P_n 3,226, even
    floor = solve_allocation(1e6, learned_tau, d_m=15)
    halfway = floor.params.params_total + floor.params.params_neuron // 2  # as far below as above
    assert floor.params.params_neuron % 2 == 0
    assert solve_allocation(halfway, learned_tau, rule="nearest", d_m=15).config.n_hidden == floor.config.n_hidden


def test_a_budget_of_exactly_one_neuron_solves_to_one():
    smallest = count_parameters(BASE.replace(d_m=100, n_hidden=1)).params_total
    assert solve_allocation(smallest, BASE, d_m=100).config.n_hidden == 1


def test_the_parameter_breakdown_adds_up_at_the_reference_config():
    count = count_parameters(BASE.replace(d_m=15, n_hidden=1024))
    assert count.params_neuron == 3211 == neuron_parameters(BASE.k_c, BASE.d_tree, 15, 30, BASE.l_mlp)
    assert count.params_hidden == 1024 * 3211
    assert count.params_output == BASE.n_output**2 + BASE.n_output
    assert count.params_readout == count.params_total - count.params_hidden - count.params_output > 0


def test_an_infeasible_budget_names_every_fixed_axis_or_the_base_config():
    with pytest.raises(BudgetError, match=r"d_m=100, d_tree=9"):
        solve_allocation(1e4, BASE, d_m=100, d_tree=9)
    with pytest.raises(BudgetError, match=r"below the smallest network for the base config"):
        solve_allocation(10, BASE)
