"""The compose topology with real processes: Postgres, a two-node Ray cluster, the API under uvicorn, a driver."""

from __future__ import annotations

import time

import httpx
import pytest
from processes import running_api, serve_command, stop_group
from spec_helpers import cli_env, run_cli, start_cli, tiny_spec, write_spec

SWEEP = "topology"
POLL_S = 0.5
RUN_TIMEOUT_S = 240


@pytest.mark.slow
def test_a_sweep_on_a_two_node_cluster_is_visible_through_the_api_while_and_after_it_runs(
    postgres_url, two_node_ray, tmp_path
):
    address, ray_env = two_node_ray
    env = {**cli_env(postgres_url, tmp_path / "state"), **{k: ray_env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    migrated = run_cli(["db", "upgrade"], env)  # the compose file's one-shot migrate service
    assert migrated.returncode == 0, migrated.stderr

    spec = tiny_spec(SWEEP, training={**tiny_spec()["training"], "steps": 40})
    with running_api(serve_command(postgres_url), env, tmp_path / "api.log") as base, \
            httpx.Client(base_url=f"{base}/api/v1", timeout=10) as api:
        driver = start_cli(["submit", str(write_spec(tmp_path, spec)), "--address", address], env)
        seen_unfinished = []  # progress the API reported while the driver was still running
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while driver.poll() is None and time.monotonic() < deadline:
                answer = api.get(f"/sweeps/{SWEEP}")
                assert answer.status_code in (200, 404), answer.text  # 404 only before the driver records the sweep
                if answer.status_code == 200 and answer.json()["progress"] < 1 and driver.poll() is None:
                    seen_unfinished.append(answer.json()["progress"])
                time.sleep(POLL_S)
            output = driver.communicate(timeout=30)[0] if driver.poll() is not None else "(still running)"
            assert driver.returncode == 0, output
        finally:
            stop_group(driver)
        assert seen_unfinished, "the API never showed the sweep while it was running"

        sweep = api.get(f"/sweeps/{SWEEP}").json()
        assert sweep["status"] == "completed" and sweep["trial_counts"] == {"completed": 4} and sweep["progress"] == 1
        trials = api.get(f"/sweeps/{SWEEP}/trials", params={"fields": "id,node,metric.final"}).json()["rows"]
        assert len(trials) == 4 and all(row["test_bpc.final"] is not None for row in trials)
        assert len({row["node"] for row in trials}) == 2, "the trials ran on one node only"
        frontier = api.get(f"/sweeps/{SWEEP}/frontier").json()["points"]
        assert frontier and {p["value"] for p in frontier} <= {row["test_bpc.final"] for row in trials}
        feed = api.get("/feed", params={"sweep": SWEEP, "timeout": 0})
        kinds = [line.removeprefix("event: ") for line in feed.text.splitlines() if line.startswith("event: ")]
        assert kinds.count("trial_completed") == 4 and "results" in kinds and kinds[-1] == "sweep_completed"
