"""Sweeps on a real Ray runtime into a real database: end to end, crash and resume, outage, retries, two nodes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spec_helpers import (
    cli_env,
    expected_steps,
    has_running_trial,
    kill_group,
    run_cli,
    start_cli,
    tiny_spec,
    wait_for,
    write_spec,
)
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy

from resultsdb import ResultsStore, migrate

pytestmark = pytest.mark.slow


def check_every_step_once(store: ResultsStore, sweep: str, training: dict) -> None:
    frame = store.summary_frame(sweep)
    steps = expected_steps(training)
    for trial_id in frame["id"]:
        series = store.series(trial_id, "train_loss", max_points=10_000)
        assert [p.step for p in series] == steps, trial_id
        row = frame.set_index("id").loc[trial_id]
        assert row["train_loss.last"] == pytest.approx(series[-1].value)
        assert row["train_loss.min"] == pytest.approx(min(p.value for p in series))
        assert row["test_bpc.final"] > 0


@pytest.fixture
def proxied_postgres(postgres_url):
    """(proxy, URL through it): the database as the driver sees it, with a plug the test can pull."""
    migrate.upgrade(postgres_url)
    url = make_url(postgres_url)
    proxy = TcpProxy((url.host, url.port or 5432)).start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_submit_runs_every_trial_and_stores_every_step_once(tmp_path, backend, request):
    db_url = request.getfixturevalue(f"{backend}_url")
    spec = tiny_spec("e2e")
    result = run_cli(["submit", str(write_spec(tmp_path, spec))], cli_env(db_url, tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "e2e: 4 completed" in result.stdout
    assert "best allocation per budget" in result.stdout
    with ResultsStore(db_url) as store:
        assert store.get_sweep("e2e").status == "completed"
        frame = store.summary_frame("e2e")
        assert len(frame) == 4 and set(frame["status"]) == {"completed"}
        assert (frame["attempts"] == 1).all()
        assert frame["node"].notna().all() and (frame["device"] == "cpu").all()
        check_every_step_once(store, "e2e", spec["training"])
    again = run_cli(["submit", str(write_spec(tmp_path, spec))], cli_env(db_url, tmp_path / "state"))
    assert again.returncode == 0 and "e2e: 4 completed" in again.stdout  # same spec: nothing left to run
    changed = write_spec(tmp_path, {**spec, "seeds": [0, 1]})
    refused = run_cli(["submit", str(changed)], cli_env(db_url, tmp_path / "state"))
    assert refused.returncode == 2 and "already exists with a different spec" in refused.stderr


@pytest.mark.parametrize("torn_outbox", [False, True], ids=["clean", "torn-outbox"])
def test_resume_after_kill_loses_no_results(tmp_path, postgres_url, torn_outbox):
    spec = tiny_spec("crash", training={**tiny_spec()["training"], "steps": 60}, max_concurrent=1)
    env = cli_env(postgres_url, tmp_path / "state")
    migrate.upgrade(postgres_url)
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    store = ResultsStore(postgres_url)
    try:
        def one_done_one_running() -> bool:
            if store.get_sweep("crash") is None:
                return False
            counts = store.get_sweep("crash").trial_counts
            return counts.get("completed", 0) >= 1 and counts.get("running", 0) >= 1
        wait_for(one_done_one_running, 240, "a completed and a running trial")
        done_before = set(store.summary_frame("crash").query("status == 'completed'")["id"])
    finally:
        kill_group(driver)
    if torn_outbox:  # the kill cut the driver's last write short
        with open(tmp_path / "state" / "outbox" / "crash.jsonl", "ab") as outbox:
            outbox.write(b'{"kind":"result","trial_id":"')
    resumed = run_cli(["resume", "crash"], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    frame = store.summary_frame("crash").set_index("id")
    assert set(frame["status"]) == {"completed"}
    assert (frame.loc[sorted(done_before), "attempts"] == 1).all()  # finished trials were not rerun
    check_every_step_once(store, "crash", spec["training"])
    store.close()


def test_database_outage_during_a_sweep_loses_nothing(tmp_path, postgres_url, proxied_postgres):
    proxy, proxied = proxied_postgres
    spec = tiny_spec("outage", training={**tiny_spec()["training"], "steps": 60}, max_concurrent=1)
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], cli_env(proxied, tmp_path / "state"))
    store = ResultsStore(postgres_url)
    try:
        wait_for(lambda: has_running_trial(store, "outage"), 240, "a running trial")
        proxy.stop()  # the database disappears for the driver
        time.sleep(15)
        proxy.start()
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output
    finally:
        if driver.poll() is None:
            kill_group(driver)
    frame = store.summary_frame("outage")
    assert set(frame["status"]) == {"completed"}
    check_every_step_once(store, "outage", spec["training"])
    store.close()


def test_failed_trials_keep_their_error_and_the_sweep_fails(tmp_path, postgres_url):
    spec = tiny_spec("doomed", budgets=[3000], training={**tiny_spec()["training"], "max_grad_norm": 1e-9})
    result = run_cli(["submit", str(write_spec(tmp_path, spec))], cli_env(postgres_url, tmp_path / "state"))
    assert result.returncode == 1, result.stdout + result.stderr
    with ResultsStore(postgres_url) as store:
        frame = store.summary_frame("doomed")
        assert set(frame["status"]) == {"failed"}
        assert frame["error"].str.contains("TrainingDiverged: gradient norm").all()
        assert (frame["attempts"] == 2).all()  # max_failures=1: one retry
        assert store.get_sweep("doomed").status == "failed"
    status = run_cli(["status", "doomed"], cli_env(postgres_url, tmp_path / "state"))
    assert "failed" in status.stdout and "gradient norm" in status.stdout


def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path, postgres_url):
    # 1000 steps so the kill lands mid-trial: the database sees step 40 a second or more after the trial passes it.
    spec = tiny_spec("retry", budgets=[3000], allocation={**tiny_spec()["allocation"], "vary": {"d_m": [2]}},
                     training={**tiny_spec()["training"], "steps": 1000, "eval_every": 100, "checkpoint_every": 20})
    env = cli_env(postgres_url, tmp_path / "state")
    migrate.upgrade(postgres_url)
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    store = ResultsStore(postgres_url)
    try:
        def reported_past_40() -> bool:
            sweep = store.get_sweep("retry")
            if sweep is None or "train_loss.last_step" not in (frame := store.summary_frame("retry")):
                return False
            return (frame["train_loss.last_step"] >= 40).any()
        wait_for(reported_past_40, 240, "a trial past step 40")
        [trial] = store.summary_frame("retry")["id"]
        # Timings differ run to run: a rerun from step 0 would store new ones, a resume re-reports the checkpoint's.
        timed_before = {p.step: p.value for p in store.series(trial, "step_time") if p.step <= 40}
        workers = trial_workers(session=driver.pid)
        assert len(workers) == 1, f"trial workers in the driver's session: {workers}"
        os.kill(workers[0], signal.SIGKILL)
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output
    finally:
        if driver.poll() is None:
            kill_group(driver)
    frame = store.summary_frame("retry")
    assert list(frame["status"]) == ["completed"] and list(frame["attempts"]) == [2]
    check_every_step_once(store, "retry", spec["training"])
    timed_after = {p.step: p.value for p in store.series(trial, "step_time") if p.step <= 40}
    # steps up to 40 came from the checkpoint, not from a rerun
    assert timed_after == timed_before and len(timed_before) == 40 // spec["training"]["report_every"]
    store.close()


def trial_workers(session: int) -> list[int]:
    """The Ray trial worker processes in session `session` (one test's driver, started in a session of its own: not
    every Ray on the machine). Ray gives each worker a process group of its own, but the session stays."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            process_session = int(stat.read_text().rsplit(")", 1)[1].split()[3])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if process_session == session and command.startswith(b"ray::ImplicitFunc"):
            workers.append(int(stat.parent.name))
    return workers


def alive_nodes(address: str, env: dict) -> int:
    probe = (f"import ray; ray.init(address='{address}', log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


@pytest.fixture
def two_node_cluster():
    """A Ray head and a second Ray node as separate processes on 127.0.0.1, one CPU each.

    `ray start --block` keeps each node's daemons in its own process group, so teardown stops exactly this
    cluster (unlike `ray stop`, which stops every Ray on the machine).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address=127.0.0.1",
           "--num-cpus=1", "--disable-usage-stats"]
    nodes = []
    try:
        nodes.append(subprocess.Popen([*ray, "--head", f"--port={port}", "--include-dashboard=false"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: alive_nodes(address, env) == 1, 120, "the Ray head")
        nodes.append(subprocess.Popen([*ray, f"--address={address}"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: alive_nodes(address, env) == 2, 120, "the second Ray node")
        yield address, env
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)


def test_trials_run_on_both_nodes_of_an_existing_cluster(tmp_path, postgres_url, two_node_cluster):
    address, ray_env = two_node_cluster
    spec = tiny_spec("cluster", training={**tiny_spec()["training"], "steps": 40})
    env = {**cli_env(postgres_url, tmp_path / "state"), **{k: ray_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    result = run_cli(["submit", str(write_spec(tmp_path, spec)), "--address", address], env)
    assert result.returncode == 0, result.stdout + result.stderr
    with ResultsStore(postgres_url) as store:
        frame = store.summary_frame("cluster")
        assert set(frame["status"]) == {"completed"}
        assert frame["node"].nunique() == 2
        check_every_step_once(store, "cluster", spec["training"])


def test_asha_runs_each_budget_as_its_own_bracket(tmp_path, postgres_url):
    spec = tiny_spec("asha", allocation={**tiny_spec()["allocation"], "vary": {"d_m": [1, 2, 4]}}, max_concurrent=1,
                     scheduler={"type": "asha", "grace_period": 5, "reduction_factor": 3})
    result = run_cli(["submit", str(write_spec(tmp_path, spec))], cli_env(postgres_url, tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    with ResultsStore(postgres_url) as store:
        frame = store.summary_frame("asha")
        assert set(frame["status"]) <= {"completed", "stopped_early"}
        for budget, group in frame.groupby("budget"):
            assert (group["status"] == "completed").any(), budget  # each bracket's first trial runs to the end
            # seeded trials in plan order: ASHA cuts the same one each time (a sweep ASHA never ran would not)
            assert (group["status"] == "stopped_early").any(), budget
        stopped = frame[frame["status"] == "stopped_early"]
        assert (stopped["train_loss.last_step"] < spec["training"]["steps"]).all()
        assert stopped["test_bpc.final"].isna().all()


def test_cancel_stops_a_running_sweep_and_resume_finishes_it(tmp_path, postgres_url):
    spec = tiny_spec("cancelled", training={**tiny_spec()["training"], "steps": 200, "checkpoint_every": 20},
                     max_concurrent=1)
    env = cli_env(postgres_url, tmp_path / "state")
    migrate.upgrade(postgres_url)
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    store = ResultsStore(postgres_url)
    try:
        wait_for(lambda: has_running_trial(store, "cancelled"), 240, "a running trial")
        assert run_cli(["cancel", "cancelled"], env).returncode == 0
        output, _ = driver.communicate(timeout=240)
        assert driver.returncode == 0, output
    finally:
        if driver.poll() is None:
            kill_group(driver)
    sweep = store.get_sweep("cancelled")
    assert sweep.status == "stopped"
    assert sweep.trial_counts.get("completed", 0) < 4 and not sweep.trial_counts.get("stopped_early")
    resumed = run_cli(["resume", "cancelled"], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert store.get_sweep("cancelled").status == "completed"
    check_every_step_once(store, "cancelled", spec["training"])
    store.close()


def test_results_wait_in_the_outbox_when_the_database_stays_down(tmp_path, postgres_url, proxied_postgres):
    proxy, proxied = proxied_postgres
    spec = tiny_spec("stays_down", budgets=[3000], max_concurrent=1)
    env = cli_env(proxied, tmp_path / "state")
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    store = ResultsStore(postgres_url)
    try:
        wait_for(lambda: has_running_trial(store, "stays_down"), 240, "a running trial")
        proxy.stop()
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 1, output
        assert "they wait in the outbox: run `orchestrator resume stays_down`" in " ".join(output.split())
        proxy.start()
        resumed = run_cli(["resume", "stays_down"], env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finally:
        if driver.poll() is None:
            kill_group(driver)
    assert set(store.summary_frame("stays_down")["status"]) == {"completed"}
    check_every_step_once(store, "stays_down", spec["training"])
    store.close()


def test_a_driver_whose_outbox_cannot_be_written_stops_with_one_line_and_resume_finishes(tmp_path, postgres_url):
    spec = tiny_spec("unwritable", budgets=[3000], allocation={**tiny_spec()["allocation"], "vary": {"d_m": [2]}},
                     training={**tiny_spec()["training"], "steps": 1000, "eval_every": 100})
    env = cli_env(postgres_url, tmp_path / "state")
    migrate.upgrade(postgres_url)
    outbox = tmp_path / "state" / "outbox" / "unwritable.jsonl"
    driver = start_cli(["submit", str(write_spec(tmp_path, spec))], env)
    store = ResultsStore(postgres_url)
    try:
        def reporting() -> bool:
            return (store.get_sweep("unwritable") is not None
                    and "train_loss.last_step" in store.summary_frame("unwritable"))
        wait_for(reporting, 240, "a trial's first results")
        kept = outbox.with_suffix(".kept")
        os.link(outbox, kept)  # the records written so far, and any appended before the swap, stay in this file
        (tmp_path / "full").mkdir()
        (tmp_path / "full.link").symlink_to(tmp_path / "full")
        os.replace(tmp_path / "full.link", outbox)  # one atomic swap: appending fails from now on, as on a full disk
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            kill_group(driver)
    assert driver.returncode == 2, output
    assert "error: results can no longer be written to" in output and "Traceback" not in output
    stopped = store.summary_frame("unwritable")
    assert stopped["train_loss.last_step"].max() < 1000 and "completed" not in set(stopped["status"])  # not trained on

    os.replace(kept, outbox)  # the disk has room again
    resumed = run_cli(["resume", "unwritable"], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert set(store.summary_frame("unwritable")["status"]) == {"completed"}
    check_every_step_once(store, "unwritable", spec["training"])
    store.close()
