"""Tiny sweep specs and a CLI runner, shared by the orchestrator and deployment tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from resultsdb import ResultsStore

TINY_TRAINING = dict(steps=20, lr=0.01, warmup_steps=2, batch_size=4, seq_len=16, eval_every=10, eval_batches=2,
                     test_batches=2, report_every=5, reset_decay_steps=10)


def tiny_spec(name: str = "tiny", **changes) -> dict:
    spec = {
        "name": name,
        "task": "synthetic_copy",
        "task_options": {"corpus_bytes": 40000},
        "metric": {"name": "test_bpc", "mode": "min"},
        "budgets": [3000, 5000],
        "allocation": {"vary": {"d_m": [2, 4]}, "fixed": {"d_tree": 3, "d_branch": 3, "rho_rec": 0.5,
                                                          "tau_m_min": 1.0, "tau_m_max": 20.0}},
        "seeds": [0],
        "training": dict(TINY_TRAINING),
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "max_failures": 1,
    }
    spec.update(changes)
    return spec


def write_spec(directory: Path, spec: dict) -> Path:
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli_env(db_url: str, state_dir: Path) -> dict:
    return {**os.environ, "ELMSCALE_DATABASE_URL": db_url, "ELMSCALE_STATE_DIR": str(state_dir), "COLUMNS": "200"}


def run_cli(args: list[str], env: dict, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def start_cli(args: list[str], env: dict) -> subprocess.Popen:
    """The CLI in its own process group, so a test can kill the driver with everything it started."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """kill -9 the driver and everything it started (its local Ray daemons and workers share its process group)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def has_running_trial(store: ResultsStore, sweep: str) -> bool:
    info = store.get_sweep(sweep)
    return info is not None and bool(info.trial_counts.get("running"))


def expected_steps(training: dict) -> list[int]:
    every = training["report_every"]
    return list(range(every, training["steps"] + 1, every))
