"""POST /sweeps/{name}/predictions records a prediction (token required, once per data snapshot); GET /predictions
lists them, scored once trials at their budgets have finished in a sweep of the same task and settings."""

from __future__ import annotations

import pytest
from apitesting import API
from store_helpers import PREDICTION_BUDGETS, ingest_synthetic, synthetic_rows, synthetic_trials

from resultsdb import ALLOCATION_COLUMNS

BUDGET = PREDICTION_BUDGETS[-1]
REQUEST = {"budget": BUDGET, "n_bootstrap": 50}


@pytest.fixture(scope="module")
def trials():
    return synthetic_trials()


@pytest.fixture
def base(store, trials) -> str:
    ingest_synthetic(store, "base", trials[trials["budget"] < BUDGET])
    return "base"


def test_recording_a_prediction_needs_a_write_token(client, store, base):
    answer = client.post(f"{API}/sweeps/{base}/predictions", json=REQUEST)
    assert answer.status_code == 401
    assert store.list_predictions() == []


def test_a_prediction_is_recorded_once_per_data_snapshot(client, base, auth):
    created = client.post(f"{API}/sweeps/{base}/predictions", json=REQUEST, headers=auth)
    again = client.post(f"{API}/sweeps/{base}/predictions", json=REQUEST, headers=auth)

    assert (created.status_code, again.status_code) == (201, 200), created.text
    assert again.json() == created.json()
    body = created.json()
    assert (body["sweep"], body["task"], body["metric"], body["mode"], body["budget"]) == (
        "base", "enwik8", "bpc", "min", BUDGET)
    assert body["predicted"]["law"] == "allocation+frontier" and body["score"] is None
    for name in ("d_m", "n_hidden", "k_e", "metric"):
        estimate = body["predicted"][name]
        assert estimate["ci_low"] < estimate["value"] < estimate["ci_high"]
    assert body["snapshot_budgets"] == list(PREDICTION_BUDGETS[:-1]) and len(body["snapshot_hash"]) == 64
    assert body["experiment"]["varied"] == ["d_m"]
    assert [p["id"] for p in client.get(f"{API}/predictions").json()] == [body["id"]]


def test_the_default_budget_is_three_times_the_sweeps_largest(client, base, auth):
    answer = client.post(f"{API}/sweeps/{base}/predictions", json={"n_bootstrap": 20, "law": "allocation"},
                         headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["budget"] == 3 * PREDICTION_BUDGETS[-2]


def test_listed_predictions_are_scored_once_trials_at_their_budget_land(client, store, base, auth, trials):
    made = client.post(f"{API}/sweeps/{base}/predictions", json=REQUEST, headers=auth).json()
    ingest_synthetic(store, "next", trials[trials["budget"] == BUDGET])

    (scored,) = client.get(f"{API}/predictions?sweep=next").json()  # scored against next, so listed with it

    assert scored["id"] == made["id"]
    score = scored["score"]
    assert score["sweeps"] == ["next"] and score["observed"]["n_trials"] == (trials["budget"] == BUDGET).sum()
    assert score["observed"]["d_m"]["value"] == pytest.approx(16, rel=0.1) and score["regret"] >= 0
    assert isinstance(score["d_m_inside"], bool) and isinstance(score["metric_inside"], bool)
    assert score["metric_error"] == pytest.approx(made["predicted"]["metric"]["value"]
                                                  - score["observed"]["metric"]["value"])
    assert client.get(f"{API}/predictions").json() == client.get(f"{API}/predictions?sweep=base").json() == [scored]


def ingest_rows(trials) -> dict:
    return {"rows": [{**{column: row[column] for column in ALLOCATION_COLUMNS}, "metrics": row["final"]}
                     for row in synthetic_rows(trials)]}


def test_an_ingested_sweeps_prediction_is_scored_by_results_ingested_into_it_later(client, auth, trials):
    below = ingest_rows(trials[trials["budget"] < BUDGET])
    answer = client.post(f"{API}/sweeps/published/results?task=enwik8&metric=bpc&mode=min", json=below, headers=auth)
    assert answer.status_code == 200, answer.text
    made = client.post(f"{API}/sweeps/published/predictions", json=REQUEST, headers=auth).json()
    assert made["experiment"] == {"sweep": "published"}  # it declares no settings: an experiment of its own

    client.post(f"{API}/sweeps/published/results", json=ingest_rows(trials[trials["budget"] == BUDGET]), headers=auth)

    (scored,) = client.get(f"{API}/predictions").json()
    assert scored["score"]["sweeps"] == ["published"]


@pytest.mark.parametrize(("path", "body", "status", "detail"), [
    ("/sweeps/nope/predictions", REQUEST, 404, "sweep 'nope' does not exist"),
    ("/sweeps/base/predictions", {"budget": PREDICTION_BUDGETS[0]}, 422, "nothing to predict from"),
    ("/sweeps/base/predictions", {"law": "frontier"}, 422, "body.law"),
    ("/sweeps/base/predictions", {"n_bootstrap": 5}, 422, "body.n_bootstrap"),
])
def test_a_prediction_that_cannot_be_made_is_refused_in_one_line(client, base, auth, path, body, status, detail):
    answer = client.post(f"{API}{path}", json=body, headers=auth)
    assert answer.status_code == status and detail in answer.json()["detail"]


def test_listing_the_predictions_of_an_unknown_sweep_is_404(client):
    assert client.get(f"{API}/predictions?sweep=nope").status_code == 404
