"""A user's mistake costs one line and exit status 2, and touches nothing: database URLs, read-only commands,
planning without the data, resubmitting an edited spec."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from spec_helpers import tiny_spec, write_spec
from typer.testing import CliRunner

from elm_core.data import load_task, task_shape
from orchestrator.cli import app
from orchestrator.plan import plan
from orchestrator.runner import prepare
from orchestrator.spec import load_spec
from resultsdb import ResultsStore, migrate, schema_head

runner = CliRunner()
SWEEPS = sorted((Path(__file__).parents[2] / "sweeps").glob("*.yaml"))
NO_DB_ENV = {"ELMSCALE_DATABASE_URL": None, "COLUMNS": "200"}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_error(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = error_lines(result.output)
    for part in expected:
        assert part in line
    return line


# Item 3: a malformed database URL


@pytest.mark.parametrize("url", ["notaurl", "mysql://u@h/x", "postgresql+psycopg2://u@h/x"])
def test_a_malformed_database_url_is_one_line_naming_the_accepted_forms(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["list", "--db", url], env=NO_DB_ENV)
    assert_one_error(result, url, "sqlite:///", "postgresql+psycopg://")
    assert list(tmp_path.iterdir()) == []


def test_serve_with_a_malformed_database_url_in_the_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["serve", "--port", "1"], env={"ELMSCALE_DATABASE_URL": "notaurl"})
    assert_one_error(result, "notaurl", "sqlite:///", "postgresql+psycopg://")


# Item 4: read-only commands need an existing database and never create or migrate one


def test_status_in_a_directory_without_a_database_says_so_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["status", "nosuch"], env=NO_DB_ENV)
    assert_one_error(result, "no elmscale database at sqlite:///elmscale.db", "submit", "db upgrade")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["list"], ["status", "nosuch"], ["export", "nosuch"], ["frontier", "nosuch"],
                                     ["token", "list"], ["cancel", "nosuch"], ["resume", "nosuch"],
                                     ["suggest", "nosuch"], ["predictions"]])
def test_commands_on_an_empty_database_say_there_is_none_and_leave_it_empty(command, db_url):
    result = runner.invoke(app, [*command, "--db", db_url], env=NO_DB_ENV)
    assert_one_error(result, "no elmscale database at", "submit")
    assert migrate.current(db_url) is None


def test_db_current_does_not_create_the_file(tmp_path):
    fresh = tmp_path / "fresh.db"
    result = runner.invoke(app, ["db", "current", "--db", f"sqlite:///{fresh}"], env=NO_DB_ENV)
    assert result.exit_code == 0, result.output
    assert not fresh.exists()


def serve(db_url: str) -> subprocess.CompletedProcess:
    """`serve` as a user starts it; a server that starts instead of refusing is stopped by the bound and fails."""
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--db", db_url]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("serve started on a database that is not at the newest revision instead of refusing")


def test_serve_refuses_a_missing_database_without_creating_it(tmp_path):
    missing = tmp_path / "missing.db"
    answer = serve(f"sqlite:///{missing}")
    assert answer.returncode == 2, answer.stderr
    assert "Traceback" not in answer.stderr
    assert "no elmscale database at" in answer.stderr
    assert not missing.exists()


def test_serve_does_not_migrate_a_database_behind_the_newest_revision(db_url):
    migrate.upgrade(db_url, "0001")
    answer = serve(db_url)
    assert answer.returncode == 2, answer.stderr
    (line,) = [line for line in answer.stderr.splitlines() if line.startswith("error:")]
    assert "orchestrator db upgrade" in line and "0001" in line
    assert migrate.current(db_url) == "0001"


def test_writing_commands_migrate_an_older_database(db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    migrate.upgrade(db_url, "0001")
    result = runner.invoke(app, ["token", "create", "lab", "--db", db_url], env=NO_DB_ENV)
    assert result.exit_code == 0, result.output
    assert migrate.current(db_url) == schema_head()


# Item 5: plan runs nothing, so it needs no data


@pytest.mark.parametrize("spec_path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_plan_of_every_shipped_sweep_needs_no_data(spec_path, tmp_path):
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["plan", str(spec_path)], env={"ELMSCALE_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    spec, _ = load_spec(spec_path)
    assert f"{spec.name}: " in result.output
    assert not data_dir.exists()


def write_shd_file(path: Path, n_samples: int) -> None:
    """A tiny file in the published SHD layout: spikes/times (s), spikes/units, labels."""
    with h5py.File(path, "w") as handle:
        times = handle.create_dataset("spikes/times", (n_samples,), dtype=h5py.vlen_dtype(np.float32))
        units = handle.create_dataset("spikes/units", (n_samples,), dtype=h5py.vlen_dtype(np.uint16))
        for sample in range(n_samples):
            times[sample] = np.array([0.01, 0.5], dtype=np.float32)
            units[sample] = np.array([sample, 699], dtype=np.uint16)
        handle.create_dataset("labels", data=np.arange(n_samples, dtype=np.uint16) % 20)


@pytest.mark.parametrize("task", ["shd", "shd_adding"])
def test_the_known_shape_of_shd_is_what_its_files_give(task, tmp_path):
    for split in ("train", "test"):
        write_shd_file(tmp_path / f"shd_{split}.h5", n_samples=10)
    loaded = load_task(task, {"data_dir": str(tmp_path), "download": False})
    assert task_shape(task, {"bin_ms": 2.0}) == (loaded.n_input, loaded.n_output)


def test_plan_sizes_the_network_from_the_tasks_known_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("ELMSCALE_DATA_DIR", str(tmp_path / "data"))
    shapes = {"enwik8": (205, 205), "shd_adding": (700, 19)}
    for spec_path in SWEEPS:
        spec, _ = load_spec(spec_path)
        if spec.task in shapes:
            expected = shapes[spec.task]
        else:
            task = load_task(spec.task, spec.task_options)
            expected = (task.n_input, task.n_output)
        assert {(t.model.n_input, t.model.n_output) for t in plan(spec)} == {expected}
    assert not (tmp_path / "data").exists()


# Item 8: resubmitting the same spec with other comments or layout


def test_a_comment_does_not_make_a_spec_different(tmp_path, migrated_db_url):
    spec_path = write_spec(tmp_path, tiny_spec("commented"))
    spec, text = load_spec(spec_path)
    with ResultsStore(migrated_db_url) as store:
        prepare(spec, text, store)
        commented = "# tried again after lunch\n" + yaml.safe_dump(tiny_spec("commented"), sort_keys=True, indent=4)
        spec_path.write_text(commented)
        again, again_text = load_spec(spec_path)
        assert len(prepare(again, again_text, store)) == len(plan(spec))
        assert store.find_sweep("commented").spec_text == text


def test_a_really_different_spec_names_the_keys_that_differ(tmp_path, migrated_db_url):
    original = tiny_spec("edited")
    spec_path = write_spec(tmp_path, original)
    with ResultsStore(migrated_db_url) as store:
        prepare(*load_spec(spec_path), store)
    edited = tiny_spec("edited", budgets=[3000, 7000], training={**original["training"], "steps": 30})
    write_spec(tmp_path, edited)
    result = runner.invoke(app, ["submit", str(spec_path), "--db", migrated_db_url], env=NO_DB_ENV)
    line = assert_one_error(result, "'edited'", "budgets, training.steps", "orchestrator resume edited")
    assert "hash" not in line


# Item 13: an infeasible budget names the file and the way to skip it


def test_an_infeasible_budget_names_the_file_and_skip_infeasible(tmp_path):
    spec_path = write_spec(tmp_path, tiny_spec("too_small", budgets=[10, 3000]))
    result = runner.invoke(app, ["plan", str(spec_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert lines and all(line.startswith(f"error: {spec_path}: ") for line in lines)
    assert any("budgets: 10 with d_m=2" in line for line in lines)
    assert "allocation.skip_infeasible: true" in lines[-1]
