"""Real processes for the deployment tests: the API under uvicorn, a two-node Ray cluster on 127.0.0.1.

Every process is started in its own session and stopped by its process group, so a test never touches
Ray or uvicorn processes that it did not start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "orchestrator"))  # tiny sweep specs: sweeps.py

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process's group, SIGKILL what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader exited; children it left behind go too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def wait_healthy(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the API exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/api/v1/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the API did not become healthy in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running_api(command: list[str], env: dict, log: Path) -> Iterator[str]:
    """Start an API server command (it gets `--port N` appended) and yield its base URL once /healthz answers."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, process, log)
        yield base_url
    finally:
        stop_group(process)


def serve_command(db_url: str) -> list[str]:
    """What the compose file's api service runs, on 127.0.0.1."""
    return [sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1", "--db", db_url]


@pytest.fixture
def two_node_ray(tmp_path) -> Iterator[tuple[str, dict]]:
    """A Ray head and a second Ray node (one CPU each) as separate `ray start --block` processes; yields (address, env)."""
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
