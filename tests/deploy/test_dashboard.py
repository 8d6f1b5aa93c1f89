"""The dashboard in headless Chromium against the real API under uvicorn on a seeded database (Postgres, or SQLite
where the test is about what the page draws rather than the deployment)."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from processes import running_api, serve_command
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from spec_helpers import tiny_spec

import api.dashboard
from analysis import predict_optimum
from api.app import create_app
from api.settings import ApiSettings
from orchestrator.plan import plan
from orchestrator.spec import parse_spec
from resultsdb import CONFIG_COLUMNS, METRIC_COLUMN, ResultsStore, migrate

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
    store.write_results([(trial["id"], step, {"valid_bpc": value + 0.1 / step}, float(step))
                         for step in (5, 10, 15, 20)])
    store.set_trial_status(trial["id"], "completed", final={"test_bpc": value})
    return value


def law_bpc(params_total: float, d_m: int, seed: int) -> float:
    """A smooth law: E + A·P^-alpha at the best d_m, which moves as d_m*(P) = 4·(P/1e4)^0.3 (4 .. 8 over the budgets
    of LAW_BUDGETS, between the grid's points), worsened by 0.5·ln²(d_m/d_m*); a little deterministic seed noise."""
    best_d_m = 4 * (params_total / 1e4) ** 0.3
    noise = 1 + 0.003 * math.sin(7.3 * seed + 11.1 * d_m + params_total / 977)
    return (0.9 + 40 * params_total**-0.3) * (1 + 0.5 * math.log(d_m / best_d_m) ** 2) * noise


LAW_BUDGETS = [10000, 20000, 50000, 100000]


def seed_planned(store: ResultsStore, name: str, budgets: list[int], d_m: list[int], seeds: list[int],
                 value: Callable[[dict], float]) -> list[dict]:
    """A fixed-budget sweep planned from a tiny spec, every trial completed with test_bpc = value(trial row)."""
    spec = tiny_spec(name, budgets=budgets, seeds=seeds)
    spec["allocation"]["vary"] = {"d_m": d_m}
    text = yaml.safe_dump(spec, sort_keys=False)
    rows = [t.row() for t in plan(parse_spec(text))]
    store.create_sweep(name, task=spec["task"], metric="test_bpc", mode="min", spec_text=text)
    for row, trial_id in zip(rows, store.add_trials(name, rows), strict=True):
        row["id"] = trial_id
        store.set_trial_status(trial_id, "running", node="127.0.0.1")
        store.set_trial_status(trial_id, "completed", final={"test_bpc": value(row)})
    return rows


def seed_law_sweep(store: ResultsStore, name: str = "laws_demo") -> list[dict]:
    """4 budgets x 5 d_m x 2 seeds from law_bpc: enough for every law."""
    return seed_planned(store, name, LAW_BUDGETS, [2, 3, 5, 8, 13], [0, 1],
                        lambda row: law_bpc(row["params_total"], row["d_m"], row["seed"]))


def seed_edge_sweep(store: ResultsStore, name: str = "edge_demo") -> list[dict]:
    """2 budgets x d_m in {2, 3, 4} x 2 seeds, better the larger d_m: each best at the grid's upper edge."""
    return seed_planned(store, name, [3000, 5000], [2, 3, 4], [0, 1],
                        lambda row: 2.0 - 0.1 * row["d_m"] - 1e-5 * row["params_total"] + 0.002 * row["seed"])


def seed_sweep(store: ResultsStore) -> dict[str, list[dict]]:
    """4 budgets x d_m in {2, 3, 4}: one trial failed, the best allocation at the largest budget left pending."""
    spec = tiny_spec(SWEEP, budgets=[2000, 3000, 5000, 8000])
    spec["allocation"]["vary"] = {"d_m": [2, 3, 4]}
    text = yaml.safe_dump(spec, sort_keys=False)
    rows = [t.row() for t in plan(parse_spec(text))]
    store.create_sweep(SWEEP, task=spec["task"], metric="test_bpc", mode="min", spec_text=text,
                       metric_modes={"valid_bpc": "min"})
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP refusals are console messages
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
        assert answer.status_code == 200
        assert answer.headers["content-type"] == api.dashboard.MEDIA_TYPES[Path(path).suffix]


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
    api_log = tmp_path / "api.log"
    with ResultsStore(postgres_url) as store, running_api(serve_command(postgres_url), env, api_log) as base:
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
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{sweep_row} a").click() or True,
                 "the sweep's link")

        seeded = {t["id"] for t in trials["completed"]}
        wait_for(driver, lambda d: trial_ids(d, "svg.frontier-chart circle.trial-point") == seeded, "the seeded trials")
        frontier = sorted(p["params_total"] for p in api.get(f"/sweeps/{SWEEP}/frontier").json()["points"])
        wait_for(driver, lambda d: frontier_params(d) == frontier, "the API's frontier points")
        assert len(frontier) == 4  # a fixed-budget sweep: one frontier point per budget
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.frontier-chart path.law-curve"),
                 "the fitted law")
        assert len(attributes(driver, "svg.tradeoff-chart circle.optimum-marker", "data-budget")) == 4

        failed = {trials["failed"][0]["id"]}
        wait_for(driver, lambda d: choose_status(d, "failed") or trial_ids(d, "table#trials tbody tr") == failed,
                 "the failed trial alone in the table")
        wait_for(driver, lambda d: choose_status(d, "") or len(trial_ids(d, "table#trials tbody tr")) == 12,
                 "every trial")

        driver.execute_script("window.notReloaded = true")
        new = trials["pending"][0]
        value = finish_trial(store, new)
        new_point = f'svg.frontier-chart circle.trial-point[data-trial-id="{new["id"]}"]'
        drawn = wait_for(driver, lambda d: attributes(d, new_point, "data-value"), "the result written during the test")
        assert float(drawn[0]) == pytest.approx(value)
        assert driver.execute_script("return window.notReloaded") is True
        wait_for(driver, lambda d: new["params_total"] in frontier_params(d), "the new trial on the frontier")

        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))


def located_d_m(driver) -> dict[float, float]:
    script = ("return [...document.querySelectorAll('svg.tradeoff-chart .located-optimum')]"
              ".map((e) => [e.getAttribute('data-budget'), e.getAttribute('data-d-m')])")
    return {float(budget): float(d_m) for budget, d_m in driver.execute_script(script)}


def text_of(driver, selector: str) -> str:
    script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent).join('\\n')"
    return driver.execute_script(script, selector)


def overflows_sideways(driver) -> bool:
    return driver.execute_script("return document.documentElement.scrollWidth > document.documentElement.clientWidth")


def curve_budgets(driver, selector: str) -> list[float]:
    return sorted(float(b) for b in attributes(driver, selector, "data-budget"))


@pytest.fixture
def sqlite_api(tmp_path) -> Iterator[tuple[str, ResultsStore]]:
    """The API under uvicorn on a fresh SQLite database; yields (base URL, a store on the same database)."""
    database_url = f"sqlite:///{tmp_path / 'elmscale.db'}"
    migrate.upgrade(database_url)
    env = {**os.environ, "ELMSCALE_DATABASE_URL": database_url}
    api_log = tmp_path / "api.log"
    with ResultsStore(database_url) as store, running_api(serve_command(database_url), env, api_log) as base:
        yield base, store


def test_dashboard_overlays_the_fitted_laws_on_the_data(sqlite_api, chromium):
    base, store = sqlite_api
    seed_law_sweep(store)
    driver = chromium
    driver.get(f"{base}/#/sweeps/laws_demo")

    budgets = [float(b) for b in LAW_BUDGETS]
    wait_for(driver, lambda d: len(attributes(d, "svg.frontier-chart circle.trial-point", "data-trial-id")) == 40,
             "the trials")
    frontier = attributes(driver, "svg.frontier-chart circle.frontier-point", "data-budget")
    assert sorted(float(b) for b in frontier) == budgets  # one per budget: its best seed-averaged allocation
    assert "per-budget optimum" in text_of(driver, "#frontier .legend")

    # The laws arrive after the data: the frontier law with its band, each budget's surface and tradeoff model curves.
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.frontier-chart path.law-curve"),
             "the frontier law")
    assert driver.find_elements(By.CSS_SELECTOR, "svg.frontier-chart path.frontier-band")
    wait_for(driver, lambda d: curve_budgets(d, "svg.tradeoff-chart path.surface-curve") == budgets,
             "the surface curves")
    assert curve_budgets(driver, "svg.tradeoff-chart path.tradeoff-model-curve") == budgets
    assert curve_budgets(driver, "svg.tradeoff-chart path.tradeoff-line") == budgets

    # Each budget's optimum located between the grid's points, near the law's d_m* = 4·(P/1e4)^0.3, inside its band.
    located = located_d_m(driver)
    assert sorted(located) == budgets
    for budget, d_m in located.items():
        assert d_m not in (2, 3, 5, 8, 13) and d_m == pytest.approx(4 * (budget / 1e4) ** 0.3, rel=0.05)
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.tradeoff-chart rect.located-band")) == 4
    assert len(attributes(driver, "svg.tradeoff-chart circle.optimum-marker", "data-budget")) == 4

    # d_m*(P) and N*(P) across budgets: the located optima and the allocation laws with their exponents.
    for column in ("d_m", "n_hidden"):
        chart = f"#across-budgets svg.across-{column.replace('_', '-')}"
        assert attributes(driver, f"{chart} path.allocation-law-curve", "data-column") == [column]
        assert len(attributes(driver, f"{chart} circle.located-point", "data-budget")) == 4
    assert re.search(r"d_m\* ∝ P\^0\.\d+ \[0\.\d+, 0\.\d+\]", text_of(driver, "#across-budgets .legend"))

    # The laws panel: every law with its formula, parameters and interval, fit quality.
    assert sorted(attributes(driver, "#laws .law-block", "data-law")) == ["allocation", "frontier", "surface",
                                                                           "tradeoff"]
    panel = text_of(driver, "#laws")
    assert "test_bpc = E + A·budget^(−alpha)" in panel
    assert "d_m.exponent" in panel and "R²" in panel and "Pearson r" in panel
    assert not driver.find_elements(By.CSS_SELECTOR, "#laws .law-refused")

    # On the N axis the located optima follow; the model curves (functions of d_m) are left out.
    Select(driver.find_element(By.CSS_SELECTOR, "#tradeoff select[name=axis]")).select_by_value("n_hidden")
    wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "svg.tradeoff-chart path.surface-curve"),
             "the N axis")
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.tradeoff-chart .located-optimum")) == 4

    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "dashboard-laws.png"))
    for width in (600, 1400):
        driver.set_window_size(width, 1500)
        wait_for(driver, lambda d, width=width: d.execute_script("return window.innerWidth") <= width,
                 f"a {width} px window")
        assert not overflows_sideways(driver), f"the page scrolls sideways at {width} px"


def test_dashboard_shows_why_laws_cannot_be_fitted_and_edge_optima(sqlite_api, chromium):
    base, store = sqlite_api
    seed_edge_sweep(store)
    driver = chromium
    driver.get(f"{base}/#/sweeps/edge_demo")

    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#laws .law-refused"), "the refused laws")
    refused = set(attributes(driver, "#laws .law-refused", "data-law"))
    assert {"frontier", "allocation", "tradeoff"} <= refused
    assert "needs at least 4 budgets, got 2" in text_of(driver, "#frontier .refusal")
    assert "have their best at the grid's edge" in text_of(driver, "#laws .law-refused[data-law=allocation]")
    assert "have their best at the grid's edge" in text_of(driver, "#across-budgets .refusal")
    assert not driver.find_elements(By.CSS_SELECTOR, "svg path.law-curve, svg path.allocation-law-curve")
    assert not driver.find_elements(By.CSS_SELECTOR, "p.error") or not text_of(driver, "p.error").strip()

    # Each optimum is the grid's last d_m: flagged, its interval open upwards (an arrow to the plot's edge).
    edge_budgets = attributes(driver, "svg.tradeoff-chart .located-optimum", "data-budget")
    assert sorted(float(b) for b in edge_budgets) == [3000, 5000]
    assert set(attributes(driver, "svg.tradeoff-chart .located-optimum", "data-edge")) == {"high"}
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.tradeoff-chart .located-whisker .open-end")) == 2
    notes = text_of(driver, "#tradeoff .optimum-notes")
    assert "best at the largest d_m (4): extend the grid upwards" in notes


def test_dashboard_draws_a_recorded_prediction_as_a_band_and_the_optimum_observed_at_its_budget(sqlite_api,
                                                                                               chromium):
    base, store = sqlite_api
    seed_law_sweep(store)
    frame, _, mode = store.metric_frame("laws_demo")
    made = predict_optimum(frame, METRIC_COLUMN, mode, 200_000, config_columns=list(CONFIG_COLUMNS), n_bootstrap=50)
    recorded, _ = store.create_prediction("laws_demo", made.to_dict())
    # The suggested sweep of the same settings, around d_m* = 4·20^0.3 ≈ 9.8 at that budget.
    seed_planned(store, "laws_next", [200_000], [4, 6, 8, 11, 16], [0, 1],
                 lambda row: law_bpc(row["params_total"], row["d_m"], row["seed"]))
    driver = chromium

    for page in ("laws_demo", "laws_next"):  # made from the one, scored against the other: shown on both
        driver.get(f"{base}/#/sweeps/{page}")
        band = "#across-budgets svg.across-d-m rect.prediction-band"
        wait_for(driver, lambda d, band=band: attributes(d, band, "data-budget") == ["200000"], "the prediction's band")
        assert [float(end) for end in attributes(driver, band, "data-low") + attributes(driver, band, "data-high")] == [
            pytest.approx(recorded.predicted.d_m.ci_low), pytest.approx(recorded.predicted.d_m.ci_high)]
        point = "#across-budgets svg.across-d-m circle.prediction-observed"
        observed = wait_for(driver, lambda d, point=point: attributes(d, point, "data-value"), "the observed optimum")
        (scored,) = store.list_predictions()
        assert float(observed[0]) == pytest.approx(scored.score.observed["d_m"]["value"])
        assert float(observed[0]) == pytest.approx(4 * 20**0.3, rel=0.1)
        inside = recorded.predicted.d_m.ci_low <= float(observed[0]) <= recorded.predicted.d_m.ci_high
        assert attributes(driver, point, "data-inside") == [str(inside).lower()]
        assert attributes(driver, "#across-budgets svg.across-n-hidden rect.prediction-band", "data-budget") == [
            "200000"]
        assert "recorded prediction at a new budget" in text_of(driver, "#across-budgets .legend")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "dashboard-prediction.png"))


def visible_text(driver, selector: str) -> str:
    return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, selector))


def trial_row_text(driver, trial_id: str) -> str:
    return visible_text(driver, f'table#trials tbody tr[data-trial-id="{trial_id}"]')


def box(driver, selector: str) -> dict:
    return driver.execute_script("return document.querySelector(arguments[0]).getBoundingClientRect().toJSON()",
                                 selector)


def test_dashboard_shows_digits_to_compare_allocations_and_names_the_metric(sqlite_api, chromium):
    base, store = sqlite_api
    trials = seed_sweep(store)
    driver = chromium
    driver.get(f"{base}/")
    sweep_row = f'table#sweeps tr[data-sweep="{SWEEP}"]'
    wait_for(driver, lambda d: visible_text(d, sweep_row), "the sweeps list")
    best = min(synthetic_bpc(t["params_total"], t["d_m"]) for t in trials["completed"])
    assert f"{best:.4g}" in visible_text(driver, sweep_row)  # 4 significant digits, not 3
    assert "2,000, 3,000, 5,000, 8,000" in visible_text(driver, sweep_row)  # budgets exact, not "2k, 3k, ..."

    driver.get(f"{base}/#/sweeps/{SWEEP}")
    trial = trials["completed"][0]
    row = wait_for(driver, lambda d: trial_row_text(d, trial["id"]), "the trials table")
    assert f"{trial['params_total']:,}" in row  # P as an exact integer: 2,958, not 2.96k
    assert f"{synthetic_bpc(trial['params_total'], trial['d_m']):.4g}" in row
    headers = visible_text(driver, "table#trials thead th").split("\n")
    assert "best test_bpc" in headers and "final test_bpc" in headers
    wait_for(driver, lambda d: "best test_bpc" in visible_text(d, ".facts"), "the sweep's facts naming the metric")


def test_dashboard_shows_a_failed_trials_error(sqlite_api, chromium):
    base, store = sqlite_api
    failed = seed_sweep(store)["failed"][0]
    driver = chromium
    driver.get(f"{base}/#/sweeps/{SWEEP}")
    wait_for(driver, lambda d: "RuntimeError: loss diverged" in trial_row_text(d, failed["id"]),
             "the failed trial's error in its row")
    driver.find_element(By.CSS_SELECTOR, f'table#trials tbody tr[data-trial-id="{failed["id"]}"]').click()
    wait_for(driver, lambda d: "RuntimeError: loss diverged" in visible_text(d, "#curves .trial-error"),
             "the error in the trial's panel")


def curve_trials(driver, selector: str) -> set[str]:
    return trial_ids(driver, f"{selector} path.curve")


def test_clicking_a_trial_draws_its_learning_curves_and_its_budgets_allocations(sqlite_api, chromium):
    base, store = sqlite_api
    trials = seed_sweep(store)
    driver = chromium
    driver.get(f"{base}/#/sweeps/{SWEEP}")
    trial = next(t for t in trials["completed"] if t["budget"] == 5000)
    wait_for(driver, lambda d: trial_row_text(d, trial["id"]), "the trials table")
    driver.find_element(By.CSS_SELECTOR, f'table#trials tbody tr[data-trial-id="{trial["id"]}"]').click()

    # The trial's validation curve: one vertex per reported step (5, 10, 15, 20).
    own = f'#curves svg.trial-curves path.curve[data-trial-id="{trial["id"]}"][data-metric="valid_bpc"]'
    path = wait_for(driver, lambda d: attributes(d, own, "d"), "the trial's valid_bpc curve")[0]
    assert len(re.findall(r"[ML]", path)) == 4

    # Every allocation at the trial's budget together, on the same metric.
    at_budget = {t["id"] for t in trials["completed"] if t["budget"] == 5000}
    wait_for(driver, lambda d: curve_trials(d, "#curves svg.budget-curves") == at_budget,
             "the curves of the budget's allocations")
    assert set(attributes(driver, "#curves svg.budget-curves path.curve", "data-metric")) == {"valid_bpc"}
    assert len(re.findall(r"d_m \d", visible_text(driver, "#curves .budget-panel .legend"))) == 3

    # Legends sit below their plot, never on the data.
    script = """return [...document.querySelectorAll('.chart')].filter((c) => c.querySelector('.legend')).map((c) => {
        const plot = c.querySelector('svg.plot').getBoundingClientRect(), legend = c.querySelector('.legend');
        return legend.getBoundingClientRect().top >= plot.bottom; })"""
    placed = driver.execute_script(script)
    assert len(placed) >= 4 and all(placed)


def test_sweeps_list_fits_a_narrow_screen(sqlite_api, chromium):
    base, store = sqlite_api
    seed_sweep(store)
    driver = chromium
    driver.set_window_size(600, 1500)
    wait_for(driver, lambda d: d.execute_script("return window.innerWidth") <= 600, "a 600 px window")
    driver.get(f"{base}/")
    wait_for(driver, lambda d: visible_text(d, f'table#sweeps tr[data-sweep="{SWEEP}"]'), "the sweeps list")
    widths = driver.execute_script("const t = document.querySelector('table#sweeps');"
                                   "return [t.scrollWidth, t.parentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the sweeps list is {widths[0]} px wide in a {widths[1]} px card"
    assert not overflows_sideways(driver)


def test_the_page_and_the_docs_work_under_the_content_security_policy(sqlite_api, chromium):
    base, store = sqlite_api
    seed_sweep(store)
    driver = chromium
    driver.get(f"{base}/")
    wait_for(driver, lambda d: visible_text(d, f'table#sweeps tr[data-sweep="{SWEEP}"]'), "the sweeps list")
    segment_widths = driver.execute_script(
        "return [...document.querySelectorAll('.progress span')].map((s) => s.getBoundingClientRect().width)")
    assert segment_widths and all(width > 0 for width in segment_widths)  # sized although style attributes are refused
    driver.get(f"{base}/docs")
    wait_for(driver, lambda d: "elmscale" in visible_text(d, ".swagger-ui .info .title"), "Swagger UI")
    driver.get(f"{base}/redoc")
    wait_for(driver, lambda d: "elmscale" in visible_text(d, "redoc h1"), "ReDoc")
    # ReDoc's "powered by" logo from its CDN is refused, as it should be (an offline lab cannot reach it anyway).
    refusals = [entry["message"] for entry in driver.get_log("browser")
                if "Content Security Policy" in entry["message"] and "https://cdn.redoc.ly/" not in entry["message"]]
    assert refusals == []
