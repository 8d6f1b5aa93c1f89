"""`suggest` records its prediction; `predictions` shows it, scored once the suggested sweep's trials finish."""

import math

import pytest
import yaml
from spec_helpers import tiny_spec
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.runner import prepare
from orchestrator.spec import parse_spec
from resultsdb import ResultsStore

runner = CliRunner()
ENV = {"COLUMNS": "250"}


def law_loss(params_total: float, d_m: int, seed: int) -> float:
    """E + A·P^-0.3 at the best d_m, which moves as d_m*(P) = 2·(P/3000)^0.3, worsened by 0.5·ln²(d_m/d_m*)."""
    best = 2 * (params_total / 3000) ** 0.3
    return (0.9 + 40 * params_total**-0.3) * (1 + 0.5 * math.log(d_m / best) ** 2) * (1 + 0.002 * seed)


def finish(store: ResultsStore, spec_text: str) -> None:
    """Record the sweep of `spec_text` and complete each of its trials with law_loss."""
    for trial in prepare(parse_spec(spec_text), spec_text, store):
        value = law_loss(trial.params.params_total, trial.model.d_m, trial.seed)
        store.set_trial_status(trial.trial_id, "completed", final={"test_bpc": value})


@pytest.fixture
def law_sweep(migrated_db_url):
    spec = tiny_spec("lawful", budgets=[3000, 6000, 12000, 24000], seeds=[0, 1],
                     allocation={"vary": {"d_m": [1, 2, 3, 4, 6, 8]}, "fixed": {"d_tree": 3, "d_branch": 3},
                                 "skip_infeasible": True})
    with ResultsStore(migrated_db_url) as store:
        finish(store, yaml.safe_dump(spec))
        yield migrated_db_url, store


def suggest(db: str, out, *options: str):
    return runner.invoke(app, ["suggest", "lawful", "--budget", "50000", "--out", str(out), "--bootstrap", "50",
                               "--db", db, *options], env=ENV)


def test_suggest_records_its_prediction_and_predictions_scores_it_when_the_suggested_sweep_finishes(law_sweep,
                                                                                                   tmp_path):
    db, store = law_sweep
    out = tmp_path / "next.yaml"

    result = suggest(db, out)

    assert result.exit_code == 0, result.output
    (recorded,) = store.list_predictions()
    assert (recorded.sweep, recorded.budget, recorded.metric) == ("lawful", 50000, "test_bpc")
    assert f"prediction {recorded.id} recorded: the optimum at P = 50,000 by the {recorded.predicted.law} law" in (
        result.output)
    d_m = recorded.predicted.d_m
    assert f"d_m {d_m.value:.3g} [{d_m.ci_low:.3g}, {d_m.ci_high:.3g}]" in result.output
    assert f"test_bpc {recorded.predicted.metric.value:.4f}" in result.output
    spec = parse_spec(out.read_text())
    grid = spec.allocation.axis_values()["d_m"]
    assert min(grid) < d_m.value < max(grid)  # the suggested grid is centred on the recorded prediction

    again = suggest(db, out)
    assert f"prediction {recorded.id} was recorded before from the same data" in again.output
    assert len(store.list_predictions()) == 1

    waiting = runner.invoke(app, ["predictions", "--db", db], env=ENV)
    assert waiting.exit_code == 0 and "waiting for its trials" in waiting.output

    finish(store, out.read_text())
    listed = runner.invoke(app, ["predictions", "--sweep", spec.name, "--db", db], env=ENV)

    assert listed.exit_code == 0, listed.output
    (scored,) = store.list_predictions(spec.name)
    assert scored.id == recorded.id and scored.score.sweeps == [spec.name]
    observed = scored.score.observed
    assert observed["d_m"]["value"] == pytest.approx(2 * (50000 / 3000) ** 0.3, rel=0.15)
    inside = "inside" if scored.score.d_m_inside else "outside"
    assert f"{observed['d_m']['value']:.3g} ({inside})" in listed.output and spec.name in listed.output
    assert f"{scored.score.metric_error:+.4g}" in listed.output and f"{scored.score.regret:.4g}" in listed.output


def test_suggest_without_a_law_that_can_predict_writes_the_spec_and_says_why_none_is_recorded(migrated_db_url,
                                                                                             tmp_path):
    spec = tiny_spec("two", budgets=[3000, 6000], allocation={"vary": {"d_m": [1, 2]},
                                                             "fixed": {"d_tree": 3, "d_branch": 3}})
    with ResultsStore(migrated_db_url) as store:
        finish(store, yaml.safe_dump(spec))
        out = tmp_path / "next.yaml"
        result = runner.invoke(app, ["suggest", "two", "--out", str(out), "--bootstrap", "20",
                                     "--db", migrated_db_url], env=ENV)

        assert result.exit_code == 0, result.output
        assert out.exists() and "no prediction recorded: no law predicts the optimum at budget 18000" in result.output
        assert store.list_predictions() == []

        refused = runner.invoke(app, ["suggest", "two", "--law", "allocation", "--out", str(out),
                                      "--db", migrated_db_url], env=ENV)
        assert refused.exit_code == 2
        assert refused.output.startswith("error: two: the allocation law cannot predict the optimum:")


def test_predictions_says_when_there_are_none_and_suggest_refuses_an_unknown_law(migrated_db_url, tmp_path):
    empty = runner.invoke(app, ["predictions", "--db", migrated_db_url], env=ENV)
    assert empty.exit_code == 0 and "no predictions recorded yet" in empty.output
    unknown = runner.invoke(app, ["suggest", "x", "--law", "frontier", "--db", migrated_db_url], env=ENV)
    assert unknown.exit_code == 2
    assert "--law must be one of allocation, surface, tradeoff or auto, got 'frontier'" in unknown.output
