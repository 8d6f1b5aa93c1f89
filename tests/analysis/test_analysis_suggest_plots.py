"""Next-sweep suggestion and figure files."""

import pytest
import yaml

from analysis import FitError, locate_optima, suggest_next_sweep
from analysis.laws import fit_laws
from analysis.plots import plot_frontier, plot_metric_vs_allocation, plot_optimum_trajectory
from analysis.suggest import centred_grid
from analysis.synthetic import D_M_LAW_TRUTH, frontier_truth, synthetic_sweep
from orchestrator.spec import parse_spec

BASE_SPEC = {"name": "enwik8_pareto", "task": "enwik8", "seeds": [0, 1, 2],
             "allocation": {"vary": {"d_m": [5, 10]}, "fixed": {"d_tree": 50, "d_branch": 15}},
             "training": {"steps": 300_000, "optimizer": "adam", "lr": 5e-4}}


@pytest.fixture(scope="module")
def trials():
    return synthetic_sweep(frontier_truth, noise=0.01, seeds=3, rng_seed=21)


def test_suggest_centres_the_d_m_grid_on_the_predicted_optimum_at_a_larger_budget(trials):
    spec = suggest_next_sweep(trials.rename(columns={"metric": "test_bpc"}), BASE_SPEC, "test_bpc", "min")
    assert set(spec) == {"name", "task", "metric", "budgets", "allocation", "seeds", "training"}
    parse_spec(yaml.safe_dump(spec))  # the orchestrator accepts what suggest writes
    assert spec["budgets"] == [pytest.approx(3e7)]
    assert spec["metric"] == {"name": "test_bpc", "mode": "min"}
    assert spec["task"] == "enwik8" and spec["seeds"] == [0, 1, 2]
    assert spec["training"] == BASE_SPEC["training"] and spec["training"] is not BASE_SPEC["training"]
    values = spec["allocation"]["vary"]["d_m"]
    true_optimum = D_M_LAW_TRUTH["coefficient"] * 3e7 ** D_M_LAW_TRUTH["exponent"]
    assert spec["allocation"]["fixed"] == {"d_tree": 50, "d_branch": 15}
    assert values == sorted(values) and len(values) == 7
    assert values[2] < true_optimum < values[4]
    assert spec["name"] == "enwik8_pareto-next-30000000"


def test_suggest_with_two_budgets_centres_on_the_largest_budgets_best(trials):
    two = trials[trials["budget"] <= 1.5e4]
    spec = suggest_next_sweep(two, BASE_SPEC, "metric", "min", budget=1e6, name="next")
    best = two[two["budget"] == two["budget"].max()].groupby("d_m")["metric"].mean().idxmin()
    assert spec["name"] == "next" and spec["budgets"] == [1e6]
    assert min(spec["allocation"]["vary"]["d_m"]) <= best <= max(spec["allocation"]["vary"]["d_m"])


def test_suggest_rejects_a_base_spec_without_task(trials):
    with pytest.raises(FitError, match="'task'"):
        suggest_next_sweep(trials, {"name": "x"}, "metric", "min")


def test_centred_grid_is_geometric_unique_and_positive():
    assert centred_grid(10, 5, 2.0) == [5, 7, 10, 14, 20]
    assert centred_grid(1, 7, 4.0)[0] == 1


def test_plots_write_non_empty_png_and_svg(trials, tmp_path):
    optima = locate_optima(trials, "metric", "min", n_bootstrap=50)
    reports, refused = fit_laws(trials, "metric", "min", optima=optima, n_bootstrap=50)
    laws = {report.law: report for report in reports}
    assert set(laws) == {"frontier", "allocation", "surface", "tradeoff"}, refused
    written = (plot_frontier(trials, "metric", "min", tmp_path / "frontier", law=laws["frontier"])
               + plot_metric_vs_allocation(trials, "metric", "min", tmp_path / "by_d_m.png", optima=optima,
                                           models=[laws["surface"], laws["tradeoff"]])
               + plot_optimum_trajectory(trials, "metric", "min", tmp_path / "sub" / "trajectory", optima=optima,
                                         law=laws["allocation"]))
    assert sorted(p.name for p in written) == sorted(f"{stem}.{ext}" for stem in ("frontier", "by_d_m", "trajectory")
                                                    for ext in ("png", "svg"))
    for path in written:
        assert path.stat().st_size > 1000
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head or b"<?xml" in head
    svg = (tmp_path / "by_d_m.svg").read_text()
    assert "located optimum" in svg and "surface model" in svg and "tradeoff model" in svg
