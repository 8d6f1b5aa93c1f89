"""The adaptive search's decisions on hand-built histories."""

from analysis.search import SearchSettings, TrialReport, search_step

CANDIDATES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
SETTINGS = SearchSettings(steps=1000, target_width=1.0, max_trials=6)


def finished(d_m: float, final: float) -> TrialReport:
    return TrialReport(d_m, {250: final + 1.0, 1000: final})


def test_coarse_grid_centres_on_the_prediction():
    step = search_step(CANDIDATES, [], 16.0, SETTINGS)
    assert [d.d_m for d in step.decisions] == [8.0, 16.0, 32.0]
    assert all(d.action == "start" and "predicted optimum d_m 16" in d.reason for d in step.decisions)


def test_adds_the_next_allocation_on_the_side_of_an_edge_optimum():
    step = search_step(CANDIDATES, [finished(4, 2.0), finished(8, 2.5), finished(16, 3.0)], None, SETTINGS)
    assert [(d.action, d.d_m) for d in step.decisions] == [("start", 2.0)]
    assert step.decisions[0].reason == "d_m 2 added: the best so far, d_m 4, was the smallest explored"


def test_adds_between_the_best_and_its_neighbours_when_the_interval_is_wide():
    wide = SearchSettings(steps=1000, coarse_stride=2, target_width=1.0, max_trials=8)
    step = search_step(CANDIDATES, [finished(2, 3.0), finished(8, 2.0), finished(32, 3.0)], None, wide)
    assert [d.d_m for d in step.decisions] == [4.0, 16.0]
    assert "between the best so far, d_m 8, and its neighbour d_m 2" in step.decisions[0].reason


def test_stops_when_the_interval_is_narrow():
    narrow = SearchSettings(steps=1000, coarse_stride=2, target_width=1.5, max_trials=8)
    step = search_step(CANDIDATES, [finished(4, 3.0), finished(8, 2.0), finished(16, 3.0)], None, narrow)
    assert step.done and step.best_d_m == 8.0 and step.interval == (4.0, 16.0)
    assert step.decisions[0].reason.startswith("d_m 8 is the optimum: its interval spans 1.39")


def test_never_starts_more_than_the_trial_budget():
    tight = SearchSettings(steps=1000, coarse_stride=2, target_width=0.1, max_trials=4)
    reports = [finished(2, 3.0), finished(8, 2.0), finished(32, 3.0)]
    step = search_step(CANDIDATES, reports, None, tight)
    assert len(step.decisions) == 1  # two would be added; one trial is left
    reports.append(finished(step.decisions[0].d_m, 2.5))
    spent = search_step(CANDIDATES, reports, None, tight)
    assert spent.done and "the 4 trials of the budget are spent" in spent.decisions[0].reason


def test_stops_at_the_rung_what_is_neither_the_best_nor_its_neighbour():
    at_rung = [TrialReport(d, {250: value}) for d, value in ((4.0, 3.0), (8.0, 3.2), (16.0, 4.0))]
    step = search_step(CANDIDATES, at_rung, None, SETTINGS)
    assert [(d.action, d.d_m) for d in step.decisions] == [("continue", 4.0), ("continue", 8.0), ("stop", 16.0)]
    assert "d_m 16 stopped at step 250" in step.decisions[2].reason


def test_is_a_pure_function_of_the_history():
    reports = [finished(4, 2.0), TrialReport(8, {250: 9.0}, stopped=True), finished(2, 2.2)]
    first = search_step(CANDIDATES, reports, None, SETTINGS)
    again = search_step(CANDIDATES, list(reversed(reports)), None, SETTINGS)
    assert first == again
    assert first.done and first.best_d_m == 4.0


def test_an_optimum_at_the_candidates_edge_is_reported_open():
    step = search_step(CANDIDATES, [finished(1, 2.0), finished(2, 2.5), finished(4, 3.0)], None, SETTINGS)
    assert step.done and step.interval == (0.0, 2.0)
    assert "the candidates' edge" in step.decisions[0].reason
