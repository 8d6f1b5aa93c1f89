"""How a sweep ends and what its status says: every trial failed, cancelled mid-run, ingested, already finished."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from spec_helpers import cli_env, run_cli, start_cli, tiny_spec, write_spec
from typer.testing import CliRunner

from api.app import API_PREFIX, create_app
from api.settings import ApiSettings
from orchestrator.cli import app
from resultsdb import ResultsStore, migrate

runner = CliRunner()
DIVERGING = {**tiny_spec()["training"], "max_grad_norm": 1e-9}  # every step raises TrainingDiverged
INGEST_ROW = {"budget": 100_000, "n_hidden": 96, "d_m": 5, "d_mlp": 10, "l_mlp": 1, "d_tree": 30, "d_branch": 10,
              "rho_rec": 0.25, "k_e": 200, "k_c": 300, "params_total": 99_000}


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def told(stderr: str) -> list[str]:
    """The CLI's own error and warning lines (Ray and Tune log there too)."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "warning:"))]


# Item 1: a sweep where every trial failed


@pytest.mark.slow
def test_a_sweep_whose_every_trial_failed_ends_failed_and_exits_1_until_one_succeeds(tmp_path, sqlite_url):
    env = cli_env(sqlite_url, tmp_path / "state")
    spec = tiny_spec("doomed", budgets=[3000], training=DIVERGING, max_failures=0)
    submitted = run_cli(["submit", str(write_spec(tmp_path, spec))], env)
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    (line,) = told(submitted.stderr)
    assert "all 2 trials failed" in line
    assert "orchestrator status doomed" in line and "orchestrator retry-failed doomed" in line
    with ResultsStore(sqlite_url) as store:
        assert store.get_sweep("doomed").status == "failed"
        first, _ = store.summary_frame("doomed")["id"]
        store.set_trial_status(first, "completed", final={"test_bpc": 3.0})  # as if its retry had succeeded
    retried = run_cli(["retry-failed", "doomed"], env)  # the other one fails again
    assert retried.returncode == 0, retried.stdout + retried.stderr
    (warning,) = told(retried.stderr)
    assert "1 of 2 trials failed" in warning and "orchestrator retry-failed doomed" in warning
    with ResultsStore(sqlite_url) as store:
        assert store.get_sweep("doomed").status == "completed"


# Item 2: a cancel leaves no trial running


@pytest.mark.slow
def test_after_a_cancel_no_trial_stays_running_once_the_driver_stopped(tmp_path, sqlite_url):
    # Reports so rare that Tune ends the trials at the cancel itself, before any of them reports again.
    training = {**tiny_spec()["training"], "steps": 100_000, "report_every": 50_000, "eval_every": 50_000}
    spec = tiny_spec("halted", training=training, max_concurrent=2)
    env = cli_env(sqlite_url, tmp_path / "state")
    migrate.upgrade(sqlite_url)
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    try:
        with ResultsStore(sqlite_url) as store:
            for _ in range(600):
                sweep = store.get_sweep("halted")
                if sweep is not None and sweep.trial_counts.get("running"):
                    break
                time.sleep(0.5)
            assert run_cli(["cancel", "halted"], env).returncode == 0
            output, _ = driver.communicate(timeout=300)
            assert driver.returncode == 0, output
            sweep = store.get_sweep("halted")
            assert sweep.status == "stopped"
            assert sweep.trial_counts == {"pending": 4}  # all still to run: `resume` runs every one
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    status = run_cli(["status", "halted"], env)
    assert "running" not in status.stdout and "4 pending" in status.stdout


# Item 7: a sweep created by ingest


def ingest(store: ResultsStore, name: str, statuses: list[str]) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(store, ApiSettings(database_url=url))) as client:
        rows = [{**INGEST_ROW, "seed": seed, "status": status, "metrics": {"accuracy": 0.9}}
                for seed, status in enumerate(statuses)]
        answer = client.post(f"{API_PREFIX}/sweeps/{name}/results?task=shd_adding&metric=accuracy&mode=max",
                             json={"rows": rows}, headers={"Authorization": f"Bearer {store.create_token(name)}"})
    assert answer.status_code == 200, answer.text


def test_an_ingested_sweeps_status_reflects_its_trials(store):
    ingest(store, "published", ["completed", "completed"])
    assert store.get_sweep("published").status == "completed"
    ingest(store, "all_failed", ["failed"])
    assert store.get_sweep("all_failed").status == "failed"


@pytest.mark.parametrize("command", ["resume", "retry-failed", "suggest"])
def test_commands_that_run_an_ingested_sweep_say_in_one_line_there_is_nothing_to_run(command, store,
                                                                                     migrated_db_url):
    ingest(store, "published", ["completed", "failed"])
    result = runner.invoke(app, [command, "published", "--db", migrated_db_url], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert lines_of(result.output) == ["error: sweep 'published' was ingested: nothing to run"]


# Item 13: cancel on a finished sweep


def test_cancel_leaves_a_finished_sweep_alone_and_says_so(store, migrated_db_url):
    ingest(store, "published", ["completed"])
    store.set_sweep_status("published", "completed")  # what an ingest, or the last trial of a run, ends with
    result = runner.invoke(app, ["cancel", "published", "--db", migrated_db_url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert lines_of(result.output) == ["published: already completed, nothing to cancel"]
    assert store.get_sweep("published").status == "completed"


# The rule both a run and an ingest end with


def test_finish_sweep_waits_for_every_trial_and_fails_only_when_none_succeeded(store):
    store.create_sweep("rule", task="synthetic_copy", metric="test_bpc", mode="min", spec_text="name: rule")
    first, second = store.add_trials("rule", [{**INGEST_ROW, "seed": seed, "config": {}} for seed in (0, 1)])
    store.set_trial_status(first, "failed", error="boom")
    assert store.finish_sweep("rule") == "pending"  # the second trial is still to run
    store.set_trial_status(second, "failed", error="boom")
    assert store.finish_sweep("rule") == "failed"
    store.set_trial_status(second, "stopped_early")
    assert store.finish_sweep("rule") == "completed"
    assert store.stop_sweep("rule") == "completed" and store.get_sweep("rule").status == "completed"
