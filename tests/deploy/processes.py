"""Real processes of the deployment tests: the API under uvicorn, started and stopped by process group.

Every process is started in its own session and stopped by its process group, so a test never touches
Ray or uvicorn processes that it did not start.
"""

from __future__ import annotations

import os
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
