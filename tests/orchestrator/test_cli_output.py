"""What the CLI shows: a sweep's progress as log lines without a terminal, the plan table, option help, figures."""

import re

import pytest
import typer
from spec_helpers import cli_env, run_cli, tiny_spec, write_spec
from typer.testing import CliRunner

from analysis.plots import frontier_figure
from analysis.synthetic import frontier_truth, synthetic_sweep
from orchestrator.cli import app
from resultsdb import ResultsStore

runner = CliRunner()
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (.+)")


def log_lines(stdout: str) -> list[str]:
    """The timestamped lines of a run's output, without their timestamps."""
    return [match[1] for line in stdout.splitlines() if (match := LOG_LINE.fullmatch(line))]


@pytest.mark.slow
def test_submit_without_a_terminal_logs_each_trial_with_its_metric_and_the_progress(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = run_cli(["submit", str(write_spec(tmp_path, tiny_spec("logged")))], cli_env(db_url, tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    logged = log_lines(result.stdout)
    assert logged[:1] == ["logged: running 4 of 4 trials"], result.stdout
    with ResultsStore(db_url) as store:
        trials = store.summary_frame("logged").to_dict("records")
    assert len(trials) == 4
    finished_at = []
    for trial in trials:
        label = f"{trial['id']} (budget {trial['budget']:.3g}, d_m {trial['d_m']}, seed 0)"
        started = logged.index(f"started {label}")
        finished_at.append(logged.index(f"finished {label}: test_bpc {trial['test_bpc.final']:.4f}"))
        assert started < finished_at[-1]
    progress = [line for line in logged if "trials done" in line]
    assert re.fullmatch(r"1/4 trials done, ETA (\d+m )?\d+s", progress[0])
    assert logged.index(progress[0]) == min(finished_at) + 1  # the first finish brings the first ETA
    assert progress[-1] == "4/4 trials done" and logged[-1] == progress[-1]
    output = result.stdout
    assert "planning..." not in output and not re.search(r"trials \d+/\d+  running", output)  # no live view
    assert output.index("4/4 trials done") < output.index("logged: 4 completed") < output.index("best allocation")


@pytest.mark.slow
def test_a_failed_trial_is_logged_with_the_first_line_of_its_error(tmp_path):
    spec = tiny_spec("doomed_log", budgets=[3000], allocation={**tiny_spec()["allocation"], "vary": {"d_m": [2]}},
                     training={**tiny_spec()["training"], "max_grad_norm": 1e-9}, max_failures=0)
    result = run_cli(["submit", str(write_spec(tmp_path, spec))],
                     cli_env(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "state"))
    logged = log_lines(result.stdout)
    failed = [line for line in logged if line.startswith("failed ")]
    assert len(failed) == 1, result.stdout + result.stderr
    error = r"\S*TrainingDiverged: gradient norm .+"
    assert re.fullmatch(rf"failed \w+ \(budget 3e\+03, d_m 2, seed 0\): {error}", failed[0])
    assert logged[logged.index(failed[0]) + 1] == "1/1 trials done"


def test_plan_table_shows_each_column_once(tmp_path):
    spec = tiny_spec("two_axes", allocation={"vary": {"d_m": [2, 4], "rho_rec": [0.3, 0.6]},
                                             "fixed": {"d_tree": 3, "d_branch": 3}})
    result = runner.invoke(app, ["plan", str(write_spec(tmp_path, spec))])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "shortfall" in line)
    assert re.findall(r"[\w*]+", header) == ["budget", "rho_rec", "N", "d_m", "k_e", "k_c", "P", "shortfall", "seed"]


@pytest.mark.parametrize("command", ["frontier", "fit", "plot"])
def test_metric_option_says_what_it_means_and_its_default(command):
    options = {name: param for param in typer.main.get_command(app).commands[command].params
               for name in param.opts}
    assert "any metric the trials reported" in options["--metric"].help
    assert "default: the sweep's metric" in options["--metric"].help


def test_frontier_figure_draws_each_best_allocation_as_a_ring_over_its_grey_dot():
    figure = frontier_figure(synthetic_sweep(frontier_truth, noise=0.01, seeds=2, rng_seed=3), "metric", "min")
    ax = figure.axes[0]
    best = next(line for line in ax.get_lines() if line.get_label() == "best allocation per budget")
    dots = next(c for c in ax.collections if c.get_label() == "allocations (seed mean)")
    assert best.get_zorder() > dots.get_zorder()  # the blue marker is drawn last...
    assert best.get_markerfacecolor() == "none"  # ...hollow...
    assert best.get_markersize() - best.get_markeredgewidth() > max(dots.get_sizes()) ** 0.5  # ...around the dot
