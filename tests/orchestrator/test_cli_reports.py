"""Reporting commands over a sweep whose results are known: frontier, export, fit, suggest, plot, status, tokens."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from spec_helpers import tiny_spec
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan import plan
from orchestrator.runner import prepare
from orchestrator.spec import parse_spec
from resultsdb import ResultsStore

runner = CliRunner()


def known_loss(n_hidden: int, k_e: int, seed: int) -> float:
    """A smooth tradeoff with an interior optimum in k_e at each budget."""
    return 1.0 + 40 / n_hidden**0.5 + 30 / k_e**0.6 + 0.001 * seed


@pytest.fixture
def finished_sweep(migrated_db_url):
    spec_dict = tiny_spec("known", budgets=[3000, 6000, 12000, 24000], seeds=[0, 1],
                          allocation={"vary": {"d_m": [1, 2, 3, 4, 6]},
                                      "fixed": {"d_tree": 3, "d_branch": 3}, "skip_infeasible": True})
    text = yaml.safe_dump(spec_dict)
    spec = parse_spec(text)
    with ResultsStore(migrated_db_url) as store:
        trials = prepare(spec, text, store)
        batch = []
        for t in trials:
            value = known_loss(t.model.n_hidden, t.params.k_e, t.seed)
            batch += [(t.trial_id, 10, {"train_loss": value + 0.5}, 1.0), (t.trial_id, 20, {"train_loss": value}, 2.0)]
            store.set_trial_status(t.trial_id, "running", node="n1", device="cpu")
        store.write_results(batch)
        for t in trials:
            store.set_trial_status(t.trial_id, "completed",
                                   final={"test_bpc": known_loss(t.model.n_hidden, t.params.k_e, t.seed)})
        yield migrated_db_url, trials


def test_frontier_prints_the_known_best_allocation_per_budget(finished_sweep):
    db, trials = finished_sweep
    result = runner.invoke(app, ["frontier", "known", "--db", db], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for budget in (3000, 6000, 12000, 24000):
        at_budget = [t for t in trials if t.budget == budget and t.seed == 0]
        best = min(at_budget, key=lambda t: known_loss(t.model.n_hidden, t.params.k_e, 0))
        mean = known_loss(best.model.n_hidden, best.params.k_e, 0.5)
        assert f"{mean:.4f}" in result.output


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_reads_back_identical_to_the_database(finished_sweep, tmp_path, fmt):
    db, trials = finished_sweep
    out = tmp_path / f"known.{fmt}"
    result = runner.invoke(app, ["export", "known", "--format", fmt, "--out", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out) if fmt == "csv" else pq.read_table(out).to_pandas()
    assert len(frame) == len(trials)
    by_id = frame.set_index("id")
    for t in trials:
        assert by_id.loc[t.trial_id, "n_hidden"] == t.model.n_hidden
        expected = known_loss(t.model.n_hidden, t.params.k_e, t.seed)
        assert by_id.loc[t.trial_id, "test_bpc.final"] == pytest.approx(expected)
    assert not list(tmp_path.glob("*.partial"))


def test_export_refuses_unknown_format_and_sweep(finished_sweep):
    db, _ = finished_sweep
    assert "csv or parquet" in runner.invoke(app, ["export", "known", "--format", "xls", "--db", db]).output
    missing = runner.invoke(app, ["export", "nope", "--db", db])
    assert missing.exit_code == 2 and "sweep 'nope' does not exist" in missing.output


def test_fit_json_gives_every_law_with_intervals_and_recovers_the_known_surface(finished_sweep, tmp_path):
    db, _ = finished_sweep
    out = tmp_path / "fit.json"
    result = runner.invoke(app, ["fit", "known", "--db", db, "--bootstrap", "100", "--json", "--budget", "1e5",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    laws = {law["law"]: law for law in printed["laws"]}
    assert set(laws) | set(printed["refused"]) == {"frontier", "allocation", "surface", "tradeoff"}
    surface = laws["surface"]
    for name, truth in (("a", 0.5), ("b", 0.6)):
        estimate = surface["parameters"][name]
        assert (estimate["ci_low"] - 1e-6 <= truth <= estimate["ci_high"] + 1e-6
                and abs(estimate["value"] - truth) < 0.05)
    assert surface["prediction"]["budget"] == 1e5 and surface["prediction"]["n_hidden"]["value"] > 0
    assert len(surface["snapshot_hash"]) == 64 and surface["curves"]


def test_fit_tables_and_a_law_the_data_cannot_determine(finished_sweep):
    db, _ = finished_sweep
    result = runner.invoke(app, ["fit", "known", "--db", db, "--bootstrap", "50", "--law", "surface"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "surface law" in result.output and "95% interval" in result.output
    wrong = runner.invoke(app, ["fit", "known", "--db", db, "--law", "colour"])
    assert (wrong.exit_code == 2
            and "--law must be one of frontier, allocation, surface, tradeoff or all" in wrong.output)


def test_fit_of_two_budgets_says_in_one_line_what_the_frontier_law_lacks(migrated_db_url):
    spec_dict = tiny_spec("two", budgets=[3000, 6000], allocation={"vary": {"d_m": [1, 2, 3]},
                                                                 "fixed": {"d_tree": 3, "d_branch": 3}})
    text = yaml.safe_dump(spec_dict)
    with ResultsStore(migrated_db_url) as store:
        for t in prepare(parse_spec(text), text, store):
            store.set_trial_status(t.trial_id, "completed",
                                   final={"test_bpc": known_loss(t.model.n_hidden, t.params.k_e, 0)})
    result = runner.invoke(app, ["fit", "two", "--db", migrated_db_url, "--law", "frontier"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: two: cannot fit the frontier law: the frontier law of 'test_bpc' (3 parameters) needs at least 4 "
        "budgets, got 2"]


def test_suggest_writes_a_spec_the_orchestrator_plans(finished_sweep, tmp_path):
    db, _ = finished_sweep
    out = tmp_path / "next.yaml"
    result = runner.invoke(app, ["suggest", "known", "--budget", "50000", "--out", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    spec = parse_spec(out.read_text())
    assert spec.budgets == [50000] and spec.metric.name == "test_bpc"
    assert all(t.params.params_total <= 50000 for t in plan(spec))


def test_plot_writes_png_and_svg(finished_sweep, tmp_path):
    db, _ = finished_sweep
    out = tmp_path / "plots"
    result = runner.invoke(app, ["plot", "known", "--out", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"known_{kind}.{ext}" for kind in ("frontier", "tradeoff", "optimum")
                           for ext in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in out.iterdir())


def test_status_and_list_show_counts(finished_sweep):
    db, trials = finished_sweep
    status = runner.invoke(app, ["status", "known", "--db", db])
    assert f"{len(trials)} trials: {len(trials)} completed" in status.output
    assert "known" in runner.invoke(app, ["list", "--db", db], env={"COLUMNS": "200"}).output


def test_tokens_are_created_listed_and_revoked(migrated_db_url):
    created = runner.invoke(app, ["token", "create", "lab", "--db", migrated_db_url])
    token = created.output.strip()
    with ResultsStore(migrated_db_url) as store:
        assert store.verify_token(token) == "lab"
    assert "lab" in runner.invoke(app, ["token", "list", "--db", migrated_db_url]).output
    assert runner.invoke(app, ["token", "revoke", "lab", "--db", migrated_db_url]).exit_code == 0
    with ResultsStore(migrated_db_url) as store:
        assert store.verify_token(token) is None
    again = runner.invoke(app, ["token", "revoke", "lab", "--db", migrated_db_url])
    assert again.exit_code == 2 and "no active token named 'lab'" in again.output


def test_db_upgrade_and_current(sqlite_url):
    assert "(empty)" in runner.invoke(app, ["db", "current", "--db", sqlite_url]).output
    assert runner.invoke(app, ["db", "upgrade", "--db", sqlite_url]).exit_code == 0
    assert "(head)" in runner.invoke(app, ["db", "current", "--db", sqlite_url]).output
