"""POST /sweeps/{name}/results: token required, JSON or CSV rows, idempotent, sweep created on demand."""

from __future__ import annotations

import pytest
from apitesting import API

CREATE = "task=shd_adding&metric=accuracy&mode=max"
ROW = {"budget": 100_000, "n_hidden": 96, "d_m": 5, "d_mlp": 10, "l_mlp": 1, "d_tree": 30, "d_branch": 10,
       "rho_rec": 0.25, "k_e": 200, "k_c": 300, "params_total": 99_000, "seed": 0}
CSV = (
    "budget,n_hidden,d_m,d_mlp,l_mlp,d_tree,d_branch,rho_rec,k_e,k_c,params_total,seed,accuracy,loss\n"
    "100000,96,5,10,1,30,10,0.25,200,300,99000,0,0.91,0.3\n"
    "100000,64,10,20,1,30,10,0.25,400,300,98000,0,0.93,\n"
)


def rows(*accuracies: float) -> dict:
    return {"rows": [{**ROW, "seed": seed, "metrics": {"accuracy": value}} for seed, value in enumerate(accuracies)]}


def test_json_rows_create_the_sweep_and_completed_trials_with_final_values(client, store, auth):
    answer = client.post(f"{API}/sweeps/published/results?{CREATE}", json=rows(0.9, 0.8), headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["created_sweep"] is True and answer.json()["trials"] == 2
    sweep = store.get_sweep("published")
    assert (sweep.task, sweep.metric, sweep.mode, sweep.trial_counts) == (
        "shd_adding", "accuracy", "max", {"completed": 2}
    )
    frontier = client.get(f"{API}/sweeps/published/frontier?aggregate_seeds=false").json()["points"]
    assert [point["value"] for point in frontier] == [0.9]


def test_ingest_is_idempotent_and_corrections_replace_values(client, store, auth):
    first = client.post(f"{API}/sweeps/published/results?{CREATE}", json=rows(0.9, 0.8), headers=auth).json()
    again = client.post(f"{API}/sweeps/published/results", json=rows(0.9, 0.8), headers=auth).json()
    assert again["trial_ids"] == first["trial_ids"] and again["created_sweep"] is False
    assert store.get_sweep("published").trial_counts == {"completed": 2}
    client.post(f"{API}/sweeps/published/results", json=rows(0.9, 0.95), headers=auth)
    assert client.get(f"{API}/sweeps/published").json()["best"] == 0.95


def test_csv_upload_reads_every_other_column_as_a_metric(client, store, auth):
    headers = {**auth, "Content-Type": "text/csv"}
    answer = client.post(f"{API}/sweeps/csv/results?{CREATE}", content=CSV, headers=headers)
    assert answer.status_code == 200, answer.text
    frame = store.summary_frame("csv").sort_values("n_hidden")
    assert frame["accuracy.final"].tolist() == [0.93, 0.91]
    assert frame["loss.final"].isna().tolist() == [True, False]


@pytest.mark.parametrize(
    ("headers", "named"),
    [({}, "missing"), ({"Authorization": "Bearer elm_wrong"}, "unknown"), ({"Authorization": "Basic abc"}, "missing")],
)
def test_writes_without_a_valid_token_are_401_and_write_nothing(client, store, headers, named):
    answer = client.post(f"{API}/sweeps/published/results?{CREATE}", json=rows(0.9), headers=headers)
    assert answer.status_code == 401 and named in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == "Bearer"
    assert store.get_sweep("published") is None


def test_revoked_token_is_refused(client, store, auth):
    store.revoke_token("tester")
    assert client.post(f"{API}/sweeps/published/results?{CREATE}", json=rows(0.9), headers=auth).status_code == 401
    assert store.list_sweeps() == []


@pytest.mark.parametrize(
    ("query", "body", "content_type", "status", "named"),
    [
        ("", rows(0.9), "application/json", 422, "task"),
        (CREATE, {"rows": [{**ROW, "d_m": "five", "metrics": {"accuracy": 1}}]}, "application/json", 422, "rows.0.d_m"),
        (CREATE, {"rows": [{**ROW, "metrics": {}}]}, "application/json", 422, "rows.0.metrics"),
        (CREATE, {"rows": []}, "application/json", 422, "rows"),
        (CREATE, "budget,seed\n1,2,3\n", "text/csv", 422, "rows.0"),
        (CREATE, "", "text/csv", 422, "empty"),
        (CREATE, "n_hidden\n1\n", "text/csv", 422, "rows.0"),
        (CREATE, "{not json", "application/json", 422, "JSON"),
        (CREATE, "x", "application/xml", 415, "Content-Type"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(client, store, auth, query, body, content_type, status, named):
    request = {"json": body} if isinstance(body, dict) else {"content": body}
    answer = client.post(
        f"{API}/sweeps/published/results?{query}", headers={**auth, "Content-Type": content_type}, **request
    )
    assert answer.status_code == status, answer.text
    assert named in answer.json()["detail"]
    assert store.get_sweep("published") is None or store.get_sweep("published").trial_counts == {}


def test_ingest_into_an_existing_sweep_with_another_metric_is_409(client, store, auth):
    client.post(f"{API}/sweeps/published/results?{CREATE}", json=rows(0.9), headers=auth)
    answer = client.post(f"{API}/sweeps/published/results?metric=bpc", json=rows(0.9), headers=auth)
    assert answer.status_code == 409 and "metric" in answer.json()["detail"]
