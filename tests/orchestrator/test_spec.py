"""Bad specs: one line per problem naming the key path and value, exit status 2, nothing in the database."""

from pathlib import Path

import pytest
import yaml
from spec_helpers import tiny_spec, write_spec
from typer.testing import CliRunner

from elm_core.data import TASK_NAMES
from elm_core.train import reported_metrics
from orchestrator.cli import app
from orchestrator.plan import plan
from orchestrator.spec import SpecError, load_spec, parse_spec
from resultsdb import ResultsStore, migrate

runner = CliRunner()


def broken(**changes) -> dict:
    return tiny_spec(**changes)


BAD_SPECS = [
    (broken(budgets=[]), "budgets: at least one budget is needed"),
    (broken(budgets=["lots"]), "budgets"),
    (broken(seeds=[]), "seeds: at least one seed is needed"),
    (broken(colour="red"), "colour: unknown key"),
    (broken(metric={"name": "test_bpc", "mode": "lowest"}), "metric.mode"),
    (broken(allocation={"vary": {"d_x": [1, 2]}}), "allocation.vary: unknown axis 'd_x'"),
    (broken(allocation={"vary": {"d_m": []}}), "allocation.vary: axis 'd_m' has no values"),
    (broken(allocation={"vary": {"d_m": [2]}, "fixed": {"wings": 2}}),
     "allocation.fixed: unknown model setting 'wings'"),
    (broken(allocation={"vary": {"d_m": [2]}, "fixed": {"rho_rec": 3}}),
     "allocation.fixed: ELMConfig.rho_rec must lie in [0, 1], got 3"),
    (broken(training={"steps": "many"}), "training"),
    (broken(training={"stepz": 5}), "training: unknown training setting 'stepz'"),
    (broken(training={"steps": 0}), "TrainConfig.steps must be >= 1, got 0"),
    (broken(budgets=[10]), "budgets: 10 with d_m=2: budget 10 is below the smallest network"),
    (broken(task="enwik9"), "task: unknown task 'enwik9'"),
    (broken(task="textfile", task_options={"path": "/nonexistent/corpus.txt"}), "/nonexistent/corpus.txt"),
    (broken(resources={"cpu": 0}), "resources.cpu"),
    (broken(name="has space"), "name"),
    (broken(metric={"name": "test_acc", "mode": "max"}),
     "metric.name: 'test_acc' is not reported by task 'synthetic_copy' (it reports: best_valid_bpc, grad_norm,"),
    (broken(metric={"name": "test_bpc", "mode": "max"}),
     "metric.mode: 'max' ranks 'test_bpc' backwards (lower is better: use mode 'min')"),
    (broken(scheduler={"type": "asha", "metric": "valid_accuracy"}),
     "scheduler.metric: 'valid_accuracy' is not reported by task 'synthetic_copy'"),
    (broken(scheduler={"type": "asha", "metric": "tokens_per_s"}),
     "scheduler.metric: 'tokens_per_s' is better higher, but the scheduler ranks it by metric.mode 'min'"),
    (broken(search={"type": "adaptive"}, seeds=[0, 1]),
     "search: an adaptive search spends its trials on allocations, not repeats: give one seed"),
    (broken(search={"type": "adaptive"}, allocation={"vary": {"d_m": [2, 4], "d_tree": [3, 4]}}),
     "search: an adaptive search varies d_m only (allocation.vary has d_m, d_tree)"),
    (broken(search={"type": "adaptive"}, scheduler={"type": "asha"}),
     "search: an adaptive search stops its own trials: remove the scheduler"),
    (broken(search={"type": "bayesian"}), "search.type: Input should be 'grid' or 'adaptive'"),
    (broken(search={"type": "adaptive", "max_trials": 0}), "search.max_trials"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_bad_spec_exits_2_with_one_clear_line_and_writes_nothing(tmp_path, spec, message):
    db = tmp_path / "results.db"
    path = write_spec(tmp_path, spec)
    result = runner.invoke(app, ["submit", str(path), "--db", f"sqlite:///{db}"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not db.exists()  # not even a schema was created


def test_bad_spec_leaves_postgres_without_rows(tmp_path, postgres_url):
    migrate.upgrade(postgres_url)
    path = write_spec(tmp_path, broken(budgets=[10]))
    assert runner.invoke(app, ["submit", str(path), "--db", postgres_url]).exit_code == 2
    with ResultsStore(postgres_url) as store:
        assert store.list_sweeps() == []


def test_every_problem_gets_its_own_line():
    with pytest.raises(SpecError) as error:
        parse_spec("name: x\ntask: pystdlib\nmetric: {name: a, mode: up}\nbudgets: []\nallocation: {vary: {}}\n")
    assert len(error.value.problems) == 3
    assert all(line.startswith("<spec>: ") for line in error.value.problems)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n  budgets: [1\n")
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2 and "not valid YAML" in result.output and "line" in result.output


def test_missing_spec_file_is_one_line(tmp_path):
    result = runner.invoke(app, ["plan", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read the spec" in result.output


def test_plan_expands_budgets_axes_and_seeds_with_solved_n():
    spec = parse_spec(__import__("yaml").safe_dump(tiny_spec(seeds=[0, 1])))
    trials = plan(spec)
    assert len(trials) == 2 * 2 * 2
    assert len({t.trial_id for t in trials}) == 8
    for t in trials:
        assert t.params.params_total <= t.budget
        assert t.model.n_hidden >= 1 and t.train_config["model"]["n_hidden"] == t.model.n_hidden
    assert plan(spec)[0].trial_id == trials[0].trial_id  # deterministic ids


def test_ranges_and_skip_infeasible():
    spec = tiny_spec(budgets=[3000, 1e6], allocation={
        "vary": {"d_m": {"start": 2, "stop": 64, "num": 6, "scale": "log"}},
        "fixed": {"d_tree": 3, "d_branch": 3}, "skip_infeasible": True})
    trials = plan(parse_spec(__import__("yaml").safe_dump(spec)))
    assert sorted({t.model.d_m for t in trials}) == [2, 4, 8, 16, 32, 64]
    assert all(t.params.params_total <= t.budget for t in trials)
    assert {t.budget for t in trials if t.model.d_m == 64} == {1e6}


def test_plan_command_prints_the_table(tmp_path):
    result = runner.invoke(app, ["plan", str(write_spec(tmp_path, tiny_spec()))])
    assert result.exit_code == 0, result.output
    assert "tiny: 4 trials" in result.output


def test_plan_of_an_adaptive_search_shows_what_it_starts_first(tmp_path):
    spec = tiny_spec("searched", budgets=[4000, 8000], search={"type": "adaptive", "max_trials": 4})
    spec["allocation"]["vary"]["d_m"] = [1, 2, 3, 4, 6]
    result = runner.invoke(app, ["plan", str(write_spec(tmp_path, spec))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert ("searched: adaptive search, at most 8 trials over 2 budgets (d_m from 1, 2, 3, 4, 6), chosen as trials "
            "finish") in result.output
    assert "searched: the first 3 trials" in result.output
    rows = [line.split("│")[1:-1] for line in result.output.splitlines() if line.startswith("│")]
    assert [(float(r[0]), int(r[2])) for r in rows] == [(4000, 2), (4000, 3), (4000, 4)]  # around the middle


def test_plan_refuses_a_metric_the_task_does_not_report_in_one_line_listing_what_it_does(tmp_path):
    spec = tiny_spec(task="pystdlib", task_options={"max_bytes": 100_000}, metric={"name": "test_acc", "mode": "max"})
    path = write_spec(tmp_path, spec)
    result = runner.invoke(app, ["plan", str(path)], env={"COLUMNS": "80"})
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {path}: metric.name: 'test_acc' is not reported by task 'pystdlib' (it reports: best_valid_bpc, "
        "grad_norm, lr, step_time, test_bpc, tokens_per_s, train_bpc, train_loss, valid_bpc)"
    ]


def test_metric_is_checked_before_any_data_is_read(tmp_path):
    offline = {"data_dir": str(tmp_path / "empty"), "download": False}
    spec = tiny_spec(task="shd_adding", task_options=offline, metric={"name": "test_bpc", "mode": "min"})
    result = runner.invoke(app, ["plan", str(write_spec(tmp_path, spec))])
    assert result.exit_code == 2
    assert ("metric.name: 'test_bpc' is not reported by task 'shd_adding' (it reports: best_valid_accuracy,"
            in result.output)
    assert "not found" not in result.output  # the missing dataset was never looked for


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_reported_metric_is_accepted_with_its_direction(task):
    for name, mode in reported_metrics(task).items():
        for chosen in [mode] if mode else ["min", "max"]:
            spec = parse_spec(yaml.safe_dump(tiny_spec(task=task, metric={"name": name, "mode": chosen})))
            assert spec.metric.name == name


def test_a_reported_metric_still_plans(tmp_path):
    spec = tiny_spec(task="pystdlib", task_options={"max_bytes": 100_000}, budgets=[25_000, 60_000],
                     metric={"name": "best_valid_bpc", "mode": "min"},
                     scheduler={"type": "asha", "metric": "valid_bpc"})
    result = runner.invoke(app, ["plan", str(write_spec(tmp_path, spec))])
    assert result.exit_code == 0, result.output
    assert "tiny: 4 trials" in result.output


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_specs_validate(path):
    spec, _ = load_spec(path)
    assert spec.metric.name in reported_metrics(spec.task)
