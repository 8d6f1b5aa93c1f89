"""A client's mistake gets a 422 naming it, never a silent empty answer or a 500; exports carry each metric once,
with a numeric type; /docs works without a network."""

from __future__ import annotations

import io
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apitesting import API, make_client
from spec_helpers import cli_env, run_cli, tiny_spec, write_spec
from store_helpers import seeded_budget_sweep

from elm_core.train import reported_metrics
from resultsdb import ALLOCATION_COLUMNS, ResultsStore

BUDGETS_METRICS = "accuracy, bpc"  # seeded_budget_sweep: bpc reported by every trial, accuracy declared (max)


def detail(answer) -> str:
    assert answer.status_code == 422, answer.text
    return answer.json()["detail"]


# Unknown metrics and out-of-range numbers


@pytest.mark.parametrize(
    "query", ["bogus.best=..1", "fields=id,bogus.best", "sort=-bogus.best", "metric.best=..2&bogus.final=1"]
)
def test_an_unknown_metric_in_a_trials_query_is_422_listing_the_sweeps_metrics(client, store, query):
    seeded_budget_sweep(store)
    answer = client.get(f"{API}/sweeps/budgets/trials?{query}")
    assert detail(answer) == f"metric 'bogus' is not reported in sweep 'budgets' (its metrics: {BUDGETS_METRICS})"


def test_series_and_frontier_of_an_unknown_metric_are_the_same_422(client, store):
    trial_ids = seeded_budget_sweep(store)
    store.write_results([(trial_ids[0], 1, {"loss": 1.0}, 1.0)])  # reported, though not declared: a known metric
    expected = f"metric 'bogus' is not reported in sweep 'budgets' (its metrics: {BUDGETS_METRICS}, loss)"
    assert detail(client.get(f"{API}/trials/{trial_ids[0]}/series?metric=bogus")) == expected
    assert detail(client.get(f"{API}/sweeps/budgets/frontier?metric=bogus")) == expected
    assert client.get(f"{API}/trials/{trial_ids[1]}/series?metric=loss").json()["points"] == []


def test_a_declared_metric_without_results_yet_is_an_empty_answer_not_an_error(client, store):
    seeded_budget_sweep(store)
    assert client.get(f"{API}/sweeps/budgets/trials?accuracy.best=0.5..").json()["rows"] == []
    assert client.get(f"{API}/sweeps/budgets/frontier?metric=accuracy").json()["points"] == []


@pytest.mark.parametrize(
    ("query", "count"),
    [("seed=99999999999999999999999", 0), ("d_m=1e30", 0), ("budget=1e300", 0), ("seed=0,1e19", 4),
     ("d_m=3000000000", 0), ("seed=..99999999999999999999999", 8), ("budget=1e3..1e300", 8), ("d_m=1e30..", 0),
     ("bpc.final=..1e300", 8), ("bpc.last_step=1e30", 0)],
)
def test_numbers_beyond_any_stored_value_match_nothing_on_both_backends(client, store, query, count):
    """An integer that no column of its type can hold (a d_m of 3e9, a seed beyond 64 bits) equals no trial's."""
    seeded_budget_sweep(store)
    answer = client.get(f"{API}/sweeps/budgets/trials?{query}")
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["rows"]) == count


# Exports


def metric_columns(columns) -> list[str]:
    return [column for column in columns if "." in column]


def assert_typed_metric_columns(schema: pa.Schema) -> None:
    for column in metric_columns(schema.names):
        expected = pa.int64() if column.endswith("_step") else pa.float64()
        assert schema.field(column).type == expected, column


def export(client, sweep: str, file_format: str) -> bytes:
    answer = client.get(f"{API}/sweeps/{sweep}/export?format={file_format}")
    assert answer.status_code == 200
    return answer.content


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[str, dict]:
    """(database URL, CLI environment) of a tiny sweep run on a real Ray runtime (synthetic_copy, test_bpc)."""
    directory = tmp_path_factory.mktemp("run")
    db_url = f"sqlite:///{directory / 'results.db'}"
    spec = write_spec(directory, tiny_spec("exported", budgets=[3000]))
    env = cli_env(db_url, directory / "state")
    result = run_cli(["submit", str(spec)], env, cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr
    return db_url, env


def test_a_real_runs_export_has_one_typed_column_per_reported_metric_and_no_constants(finished_run, tmp_path):
    db_url, env = finished_run
    with ResultsStore(db_url) as store, make_client(store) as client:
        sweep = store.find_sweep("exported")
        series = client.get(f"{API}/trials/{store.summary_frame('exported')['id'][0]}/series?metric=k_c")
        parquet = pq.read_table(io.BytesIO(export(client, "exported", "parquet")))
    reported = reported_metrics("synthetic_copy")
    assert set(sweep.metric_modes) == {name for name, mode in reported.items() if mode}  # no test_accuracy
    assert "k_c" in detail(series) and "k_c" not in sweep.metric_modes
    assert_typed_metric_columns(parquet.schema)
    metrics = {column.rpartition(".")[0] for column in metric_columns(parquet.schema.names)}
    assert metrics == set(reported) and not metrics & set(ALLOCATION_COLUMNS)
    assert "metric" not in parquet.schema.names
    assert [c for c in parquet.schema.names if c.endswith(".final")] == ["test_bpc.final"]
    assert parquet.column("test_bpc.final").null_count == 0

    out = tmp_path / "exported.csv"
    result = run_cli(["export", "exported", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == parquet.schema.names
    assert all(pd.api.types.is_numeric_dtype(frame[column]) for column in metric_columns(frame.columns))


def test_constant_series_an_older_trainer_recorded_are_left_out_of_exports(client, store, tmp_path):
    trial_ids = seeded_budget_sweep(store)
    constants = {"params_total": 950.0, "n_hidden": 64.0, "k_e": 100.0, "k_c": 50.0}
    store.write_results([(trial_ids[0], step, {"bpc": 2.0, "lr": 0.1 / step, **constants}, float(step))
                         for step in (1, 2)])
    parquet = pq.read_table(io.BytesIO(export(client, "budgets", "parquet")))
    csv = pd.read_csv(io.BytesIO(export(client, "budgets", "csv")))
    for names in (parquet.schema.names, list(csv.columns)):
        assert {column.rpartition(".")[0] for column in metric_columns(names)} == {"bpc", "lr"}
        assert "metric" not in names and {"params_total", "n_hidden", "k_e", "k_c"} <= set(names)
    assert_typed_metric_columns(parquet.schema)
    assert all(pd.api.types.is_float_dtype(csv[column]) for column in metric_columns(csv.columns)
               if not column.endswith("_step"))


# /docs offline


def test_docs_page_loads_only_local_assets_that_answer_with_javascript_and_css(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"https?://|//[a-z]", page.text.replace("window.location.origin", ""))
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    styles = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"|<link[^>]*href="([^"]+)"[^>]*rel="stylesheet"',
                        page.text)
    assert scripts and styles
    for url in scripts:
        answer = client.get(url)
        assert answer.status_code == 200 and "javascript" in answer.headers["content-type"], url
        assert "SwaggerUIBundle" in answer.text
    for url in ("".join(match) for match in styles):
        answer = client.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/css"), url
    assert client.get(re.search(r"url: '([^']+)'", page.text).group(1)).json()["info"]["title"] == "elmscale"

