"""GET /trials/{id} and /trials/{id}/series."""

from __future__ import annotations

from apitesting import API
from store_helpers import allocation, create_sweep


def test_trial_detail_has_allocation_status_and_metric_summaries(client, store):
    create_sweep(store, "one")
    (trial_id,) = store.add_trials("one", [allocation(params_total=1234, d_m=7)])
    store.write_results([(trial_id, step, {"bpc": 3.0 - step / 10}, float(step)) for step in range(10)])
    store.set_trial_status(trial_id, "completed", final={"bpc": 2.05})
    trial = client.get(f"{API}/trials/{trial_id}").json()
    assert (trial["sweep"], trial["status"], trial["d_m"], trial["params_total"]) == ("one", "completed", 7, 1234)
    assert trial["metrics"]["bpc"]["best"] == 2.1 and trial["metrics"]["bpc"]["final"] == 2.05
    assert trial["metrics"]["bpc"]["last_step"] == 9


def test_series_is_downsampled_and_keeps_the_last_point(client, store):
    create_sweep(store, "one")
    (trial_id,) = store.add_trials("one", [allocation(params_total=1)])
    store.write_results([(trial_id, step, {"bpc": float(step), "loss": 1.0}, float(step)) for step in range(100)])
    points = client.get(f"{API}/trials/{trial_id}/series?max_points=10").json()["points"]
    assert len(points) == 10 and points[-1]["step"] == 99
    assert [point["step"] for point in points] == sorted(point["step"] for point in points)
    other = client.get(f"{API}/trials/{trial_id}/series?metric=loss&max_points=1000").json()
    assert other["metric"] == "loss" and len(other["points"]) == 100


def test_unknown_or_malformed_trial_ids_are_refused(client, store):
    create_sweep(store, "one")
    assert client.get(f"{API}/trials/0123456789abcdef").status_code == 404
    assert client.get(f"{API}/trials/0123456789abcdef/series").status_code == 404
    assert client.get(f"{API}/trials/not-hex!").status_code == 422
    assert client.get(f"{API}/trials/0123456789abcdef/series?max_points=0").status_code == 422
