"""GET /sweeps/{name}/export: files that read back identical to the database's trial table."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apitesting import API
from store_helpers import seeded_budget_sweep


@pytest.fixture
def expected(store) -> pd.DataFrame:
    trial_ids = seeded_budget_sweep(store)
    store.write_results([(trial_ids[0], step, {"bpc": 2.5 - step / 10, "loss": 1.0}, float(step)) for step in range(5)])
    store.set_trial_status(trial_ids[1], "failed", error="diverged, said the trainer")
    return store.summary_frame("budgets")


def download(client, file_format: str) -> bytes:
    answer = client.get(f"{API}/sweeps/budgets/export?format={file_format}")
    assert answer.status_code == 200
    assert f"budgets.{file_format}" in answer.headers["content-disposition"]
    return answer.content


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows with every missing value as None, so NaN, NaT and <NA> compare equal."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def test_parquet_export_reads_back_as_the_database_rows(client, expected):
    content = download(client, "parquet")
    assert pq.read_table(io.BytesIO(content)).equals(pa.Table.from_pandas(expected, preserve_index=False))
    assert records(pd.read_parquet(io.BytesIO(content))) == records(expected)


def test_arrow_stream_export_reads_back_as_the_database_rows(client, expected):
    table = pa.ipc.open_stream(download(client, "arrow")).read_all()
    assert table.equals(pa.Table.from_pandas(expected, preserve_index=False))


def test_csv_export_reads_back_as_the_database_rows(client, expected):
    read_back = pd.read_csv(io.BytesIO(download(client, "csv")))
    assert read_back["id"].tolist() == expected["id"].tolist()
    assert read_back["error"].fillna("").tolist() == expected["error"].fillna("").tolist()
    for column in ["budget", "d_m", "params_total", "seed", "bpc.best", "bpc.final", "loss.last"]:
        assert read_back[column].tolist() == pytest.approx(expected[column].astype(float).tolist(), nan_ok=True), column


def test_unknown_format_is_422(client, expected):
    answer = client.get(f"{API}/sweeps/budgets/export?format=xlsx")
    assert answer.status_code == 422 and "format" in answer.json()["detail"]
