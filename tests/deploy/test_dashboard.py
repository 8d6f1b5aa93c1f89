"""The dashboard in headless Chromium against the real API under uvicorn on a seeded Postgres database."""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import running_api, serve_command
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from sweeps import tiny_spec

import api.dashboard
from api.app import create_app
from api.settings import ApiSettings
from orchestrator.plan import plan
from orchestrator.spec import parse_spec
from resultsdb import ResultsStore, migrate

SWEEP = "dashboard_demo"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
PAGE_TIMEOUT_S = 30
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1500"]


def synthetic_bpc(params_total: int, d_m: int) -> float:
    """A loss that falls as a power law in P, with its best d_m at 3 at every budget."""
    return 0.4 + 30 * params_total**-0.5 + 0.05 * (math.log2(d_m) - math.log2(3)) ** 2


def finish_trial(store: ResultsStore, trial: dict) -> float:
    value = synthetic_bpc(trial["params_total"], trial["d_m"])
    store.set_trial_status(trial["id"], "running", node="127.0.0.1")
    store.write_results([(trial["id"], step, {"valid_bpc": value + 0.1 / step}, float(step)) for step in (5, 10, 15, 20)])
    store.set_trial_status(trial["id"], "completed", final={"test_bpc": value})
    return value


def seed_sweep(store: ResultsStore) -> dict[str, list[dict]]:
    """4 budgets x d_m in {2, 3, 4}: one trial failed, the best allocation at the largest budget left pending."""
    spec = tiny_spec(SWEEP, budgets=[2000, 3000, 5000, 8000])
    spec["allocation"]["vary"] = {"d_m": [2, 3, 4]}
    text = yaml.safe_dump(spec, sort_keys=False)
    rows = [t.row() for t in plan(parse_spec(text))]
    store.create_sweep(SWEEP, task=spec["task"], metric="test_bpc", mode="min", spec_text=text)
    for row, trial_id in zip(rows, store.add_trials(SWEEP, rows), strict=True):
        row["id"] = trial_id
    pending = next(r for r in rows if r["budget"] == 8000 and r["d_m"] == 3)
    failed = next(r for r in rows if r["budget"] == 2000 and r["d_m"] == 4)
    store.set_trial_status(failed["id"], "failed", error="RuntimeError: loss diverged")
    completed = [r for r in rows if r is not pending and r is not failed]
    for trial in completed:
        finish_trial(store, trial)
    return {"completed": completed, "pending": [pending], "failed": [failed]}


@pytest.fixture
def chromium() -> Iterator:
    binary, driver_binary = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver_binary):
        message = "headless Chromium is not installed (Debian packages: chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"elmscale-chromium-{os.getpid()}"
    shutil.rmtree(profile, ignore_errors=True)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(driver_binary))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str):
    """Poll `condition` until it is truthy; the live page re-renders, so element references may go stale."""
    return WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
                         ).until(condition, message=f"waiting for {what}")


def attributes(driver, selector: str, attribute: str) -> list[str]:
    """`attribute` of every element matching `selector`, read in one script so a re-render cannot split it."""
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))"
    return driver.execute_script(script, selector, attribute)


def trial_ids(driver, selector: str) -> set[str]:
    return set(attributes(driver, selector, "data-trial-id"))


def frontier_params(driver) -> list[float]:
    return sorted(float(p) for p in attributes(driver, "svg.frontier-chart circle.frontier-point", "data-params"))


def choose_status(driver, status: str) -> None:
    Select(driver.find_element(By.CSS_SELECTOR, "form.filters select[name=status]")).select_by_value(status)


@pytest.fixture
def dashboard_client(tmp_path) -> Iterator[TestClient]:
    database_url = f"sqlite:///{tmp_path / 'elmscale.db'}"
    migrate.upgrade(database_url)
    app = create_app(settings=ApiSettings(database_url=database_url))
    with TestClient(app) as client:
        yield client


def test_the_page_and_every_file_it_references_are_served(dashboard_client):
    page = dashboard_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert {"static/plot.js", "static/dashboard.js", "static/dashboard.css"} <= set(referenced)
    for path in referenced:
        answer = dashboard_client.get(f"/{path}")
        assert answer.status_code == 200 and answer.headers["content-type"] == api.dashboard.MEDIA_TYPES[Path(path).suffix]


def test_only_the_dashboards_own_files_are_served(dashboard_client):
    for name in ("nope.js", "..%2Fdashboard.py", "..%2F..%2Fpyproject.toml"):
        assert dashboard_client.get(f"/static/{name}").status_code == 404


def test_the_page_loads_nothing_from_the_internet():
    for path in api.dashboard.STATIC_FILES.values():
        urls = set(re.findall(r"https?://[^\s\"'`)]+", path.read_text()))
        assert urls <= {SVG_NAMESPACE}, f"{path.name} refers to {urls - {SVG_NAMESPACE}}"


def test_dashboard_shows_the_frontier_and_a_new_result_without_reload(postgres_url, chromium, tmp_path):
    migrate.upgrade(postgres_url)
    env = {**os.environ, "ELMSCALE_DATABASE_URL": postgres_url}
    with ResultsStore(postgres_url) as store, running_api(serve_command(postgres_url), env, tmp_path / "api.log") as base:
        trials = seed_sweep(store)
        driver = chromium
        api = httpx.Client(base_url=f"{base}/api/v1")

        driver.get(f"{base}/")
        sweep_row = f'table#sweeps tr[data-sweep="{SWEEP}"]'
        progress = wait_for(driver, lambda d: d.execute_script(
            "return document.querySelector(arguments[0])?.textContent", sweep_row), "the sweeps list")
        assert "11/12" in progress  # 10 completed + 1 failed of 12 trials
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-sweeps.png"))
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{sweep_row} a").click() or True, "the sweep's link")

        seeded = {t["id"] for t in trials["completed"]}
        wait_for(driver, lambda d: trial_ids(d, "svg.frontier-chart circle.trial-point") == seeded, "the seeded trials")
        frontier = sorted(p["params_total"] for p in api.get(f"/sweeps/{SWEEP}/frontier").json()["points"])
        wait_for(driver, lambda d: frontier_params(d) == frontier, "the API's frontier points")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.frontier-chart path.law-curve"), "the fitted law")
        assert len(attributes(driver, "svg.tradeoff-chart circle.optimum-marker", "data-budget")) == 4

        wait_for(driver, lambda d: choose_status(d, "failed") or trial_ids(d, "table#trials tbody tr") == {trials["failed"][0]["id"]},
                 "the failed trial alone in the table")
        wait_for(driver, lambda d: choose_status(d, "") or len(trial_ids(d, "table#trials tbody tr")) == 12, "every trial")

        driver.execute_script("window.notReloaded = true")
        new = trials["pending"][0]
        value = finish_trial(store, new)
        new_point = f'svg.frontier-chart circle.trial-point[data-trial-id="{new["id"]}"]'
        drawn = wait_for(driver, lambda d: attributes(d, new_point, "data-value"), "the result written during the test")
        assert float(drawn[0]) == pytest.approx(value)
        assert driver.execute_script("return window.notReloaded") is True
        wait_for(driver, lambda d: new["params_total"] in frontier_params(d), "the new trial on the frontier")

        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
