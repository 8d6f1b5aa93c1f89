"""An adaptive sweep on a real Ray runtime: its trials are ordinary trials, its decisions are recorded with their
reasons, and a driver killed mid-search resumes without redoing what finished."""

from __future__ import annotations

import pytest
from spec_helpers import cli_env, kill_group, run_cli, start_cli, tiny_spec, wait_for, write_spec

from orchestrator.adaptive import decisions
from resultsdb import ResultsStore, migrate

pytestmark = pytest.mark.slow

MAX_TRIALS = 4


def adaptive_spec() -> dict:
    spec = tiny_spec("searched", budgets=[4000, 8000], search={"type": "adaptive", "max_trials": MAX_TRIALS},
                     training={**tiny_spec()["training"], "steps": 40})
    spec["allocation"]["vary"]["d_m"] = [1, 2, 3, 4, 6]
    return spec


def test_a_killed_adaptive_search_resumes_without_redoing_finished_trials(tmp_path, sqlite_url):
    env = cli_env(sqlite_url, tmp_path / "state")
    migrate.upgrade(sqlite_url)
    driver = start_cli(["submit", str(write_spec(tmp_path, adaptive_spec()))], env)
    store = ResultsStore(sqlite_url)
    try:
        def one_completed() -> bool:
            sweep = store.get_sweep("searched")
            return sweep is not None and sweep.trial_counts.get("completed", 0) >= 1
        wait_for(one_completed, 240, "a completed trial")
        before = store.summary_frame("searched").set_index("id")
    finally:
        kill_group(driver)
    finished_before = before[before["status"] == "completed"]

    resumed = run_cli(["resume", "searched"], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    frame = store.summary_frame("searched").set_index("id")
    assert store.get_sweep("searched").status == "completed"
    assert set(frame["status"]) <= {"completed", "stopped_early"}
    # what finished before the kill was not trained again
    assert (frame.loc[finished_before.index, "ended_at"] == finished_before["ended_at"]).all()
    assert (frame.loc[finished_before.index, "attempts"] == finished_before["attempts"]).all()

    events = decisions(store, "searched")
    keys = [(e.payload["budget"], e.payload["action"], e.payload["d_m"]) for e in events]
    assert len(keys) == len(set(keys))  # the resumed search repeated its decisions without recording them twice
    started = {e.trial_id for e in events if e.payload["action"] == "start"}
    assert started == set(frame.index)  # every trial was started by a recorded decision, and only those
    for budget in (4000, 8000):
        assert (frame["budget"] == budget).sum() <= MAX_TRIALS
        [done] = [e for e in events if e.payload["budget"] == budget and e.payload["action"] == "done"]
        assert done.payload["reason"].startswith(f"d_m {done.payload['d_m']:g} is the")
    stopped = {e.trial_id for e in events if e.payload["action"] == "stop"}
    assert stopped == set(frame.index[frame["status"] == "stopped_early"])

    status = run_cli(["status", "searched"], env)
    assert "the search's decisions:" in status.stdout
    assert "budget 4e+03: d_m 3 started: coarse grid around the middle candidate" in status.stdout
    assert "budget 8e+03: d_m" in status.stdout and "coarse grid around the predicted optimum" in status.stdout
    store.close()
