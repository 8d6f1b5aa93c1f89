"""Fixtures of the deployment tests: a two-node Ray cluster on 127.0.0.1 (see processes.py for how processes
are started and stopped)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from processes import STARTUP_TIMEOUT_S, free_port, stop_group


@pytest.fixture
def two_node_ray(tmp_path) -> Iterator[tuple[str, dict]]:
    """A Ray head and a second Ray node (one CPU each) as separate `ray start --block` processes; yields
    (address, env)."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address=127.0.0.1",
           "--num-cpus=1", "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        for i, role in enumerate([["--head", f"--port={port}", "--include-dashboard=false"], [f"--address={address}"]]):
            log = (tmp_path / f"ray-node-{i}.log").open("w")
            nodes.append(subprocess.Popen([*ray, *role], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            _wait_for_nodes(address, env, i + 1, nodes[-1])
        yield address, env
    finally:
        for node in reversed(nodes):
            stop_group(node)


def _wait_for_nodes(address: str, env: dict, count: int, process: subprocess.Popen) -> None:
    """Until the cluster at `address` lists `count` live nodes (`ray status` through the same token)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"a Ray node exited with {process.returncode}")
        status = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={address}"],
                                env=env, capture_output=True, text=True, timeout=60)
        if status.returncode == 0 and status.stdout.count("node_") >= count:
            return
        time.sleep(1)
    pytest.fail(f"the Ray cluster at {address} did not reach {count} nodes in {STARTUP_TIMEOUT_S} s")
