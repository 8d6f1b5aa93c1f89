"""One driver per sweep: the lease in the store on both backends, and the CLI refusing a second driver."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading

import pytest
from spec_helpers import (
    cli_env,
    has_running_trial,
    kill_group,
    run_cli,
    start_cli,
    tiny_spec,
    wait_for,
    write_spec,
)
from store_helpers import SWEEP, create_sweep

from resultsdb import DriverLease, ResultsStore, SweepLeaseHeld, migrate

HOLDER_LINE = (r"error: sweep '{sweep}' is being run by pid {pid} on host {host} since \d\d:\d\d:\d\d; "
               r"`--force` takes it over")


@pytest.fixture
def sweep(store: ResultsStore) -> str:
    create_sweep(store)
    return SWEEP


def exited_pid() -> int:
    """The pid of a process of this host that has ended (and was reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_a_held_lease_refuses_another_driver_naming_its_holder(store, sweep):
    first = store.acquire_lease(sweep)

    with pytest.raises(SweepLeaseHeld) as refused:
        store.acquire_lease(sweep)

    assert (refused.value.host, refused.value.pid, refused.value.since) == (first.host, first.pid, first.acquired_at)
    assert re.fullmatch(rf"sweep '{sweep}' is being run by pid {first.pid} on host {first.host} since \d\d:\d\d:\d\d",
                        str(refused.value))
    assert store.heartbeat_lease(first)


def test_a_released_lease_is_free(store, sweep):
    first = store.acquire_lease(sweep)

    assert store.release_lease(first)

    second = store.acquire_lease(sweep)
    assert second.holder != first.holder
    assert not store.heartbeat_lease(first) and not store.release_lease(first)


def test_the_lease_of_a_process_gone_from_this_host_is_taken_over_at_once(store, sweep):
    dead = store.acquire_lease(sweep, pid=exited_pid())

    taken = store.acquire_lease(sweep)

    assert taken.holder != dead.holder
    assert not store.heartbeat_lease(dead)


def test_another_hosts_lease_is_free_only_once_its_heartbeat_is_stale(store, sweep):
    # The pid does not exist here, but on its own host it may: only the heartbeat tells.
    elsewhere = store.acquire_lease(sweep, host="node-elsewhere", pid=exited_pid())
    with pytest.raises(SweepLeaseHeld, match="on host node-elsewhere"):
        store.acquire_lease(sweep)

    taken = store.acquire_lease(sweep, expiry_s=0)  # the heartbeat is older than no time at all

    assert not store.heartbeat_lease(elsewhere)
    assert store.heartbeat_lease(taken)


def test_force_takes_over_a_live_drivers_lease_and_its_release_leaves_the_new_one(store, sweep):
    live = store.acquire_lease(sweep)

    forced = store.acquire_lease(sweep, force=True)

    assert not store.release_lease(live)
    with pytest.raises(SweepLeaseHeld):
        store.acquire_lease(sweep)
    assert store.release_lease(forced)


def test_two_drivers_racing_for_a_lease_get_exactly_one(store, sweep):
    start = threading.Barrier(2)
    outcomes: list[DriverLease | SweepLeaseHeld] = []

    def race() -> None:
        start.wait()
        try:
            outcomes.append(store.acquire_lease(sweep))
        except SweepLeaseHeld as refused:
            outcomes.append(refused)

    racers = [threading.Thread(target=race) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)

    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["DriverLease", "SweepLeaseHeld"]


@pytest.mark.slow
def test_a_second_driver_is_refused_and_resume_after_a_kill_takes_over_at_once(tmp_path, postgres_url):
    # 1000 steps so the kill lands mid-trial (see test_runs.test_a_killed_trial_is_retried_from_its_checkpoint), and
    # six trials one at a time so that some trial is still to run mid-trial however long the refusals take.
    spec = tiny_spec("leased", budgets=[3000], max_concurrent=1, seeds=[0, 1, 2],
                     training={**tiny_spec()["training"], "steps": 1000, "eval_every": 100, "checkpoint_every": 20})
    spec_path = write_spec(tmp_path, spec)
    env = cli_env(postgres_url, tmp_path / "state")
    migrate.upgrade(postgres_url)
    driver = start_cli(["submit", str(spec_path)], env)
    store = ResultsStore(postgres_url)
    try:
        def running_mid_trial() -> list[str]:
            if not has_running_trial(store, "leased"):
                return []
            frame = store.summary_frame("leased")
            if "train_loss.last_step" not in frame:
                return []
            mid_trial = (frame["status"] == "running") & frame["train_loss.last_step"].between(40, 500)
            return list(frame.loc[mid_trial, "id"])
        wait_for(running_mid_trial, 240, "a running trial past step 40")
        holder = HOLDER_LINE.format(sweep="leased", pid=driver.pid, host=re.escape(socket.gethostname()))
        for second in (["resume", "leased"], ["submit", str(spec_path)]):
            refused = run_cli(second, env)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert re.fullmatch(holder, refused.stderr.strip()), refused.stderr
        wait_for(running_mid_trial, 240, "a running trial past step 40")  # the refusals took a while
        [running] = running_mid_trial()
    finally:
        kill_group(driver)

    resumed = run_cli(["resume", "leased"], env)  # the dead driver's heartbeat is fresh: its gone pid frees it

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    frame = store.summary_frame("leased").set_index("id")
    assert set(frame["status"]) == {"completed"}
    # the trial running at the kill started twice, the other once
    assert frame["attempts"].to_dict() == {trial: 2 if trial == running else 1 for trial in frame.index}
    store.close()
