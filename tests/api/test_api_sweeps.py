"""GET /sweeps, /sweeps/{name} and /sweeps/{name}/trials: overview, filters, sort, pages, projection."""

from __future__ import annotations

import pytest
from apitesting import API
from store_helpers import add_finished, allocation, create_sweep, seeded_budget_sweep


def test_sweep_list_and_detail_show_counts_best_and_budgets(client, store):
    seeded_budget_sweep(store)
    create_sweep(store, "empty")
    listed = {sweep["name"]: sweep for sweep in client.get(f"{API}/sweeps").json()}
    assert listed["budgets"]["trial_counts"] == {"completed": 8}
    assert listed["budgets"]["best"] == 1.0 and listed["budgets"]["budgets"] == [1000, 2000]
    assert listed["budgets"]["progress"] == 1.0
    assert listed["empty"]["trials_total"] == 0 and listed["empty"]["best"] is None
    detail = client.get(f"{API}/sweeps/budgets").json()
    assert detail["spec_text"] == "name: budgets" and detail["metric"] == "bpc" and detail["mode"] == "min"


def test_unknown_sweep_is_404_naming_it(client):
    for path in ("", "/trials", "/frontier", "/optimum", "/laws", "/laws/frontier", "/export"):
        answer = client.get(f"{API}/sweeps/nope{path}")
        assert answer.status_code == 404, path
        assert "nope" in answer.json()["detail"]


@pytest.fixture
def grid(store) -> list[str]:
    """12 completed trials: d_m in 2, 4, 8; budgets 1e5..4e5; bpc = 3 - index / 10."""
    create_sweep(store, "grid")
    results = [
        (allocation(params_total=1000 + index, d_m=(2, 4, 8)[index % 3], budget=100_000 * (1 + index // 3)),
         3 - index / 10)
        for index in range(12)
    ]
    return add_finished(store, "grid", results)


def trials(client, query: str, expected_status: int = 200) -> dict:
    answer = client.get(f"{API}/sweeps/grid/trials?{query}")
    assert answer.status_code == expected_status, answer.text
    return answer.json()


def test_filters_on_sets_ranges_status_and_metric_thresholds(client, grid):
    rows = trials(client, "d_m=2,8&budget=1e5..2e5&status=completed&fields=d_m,budget,bpc.final&limit=1000")["rows"]
    assert sorted((row["d_m"], row["budget"]) for row in rows) == [
        (2, 100_000), (2, 200_000), (8, 100_000), (8, 200_000)
    ]
    low = trials(client, "metric.final=..2.2&fields=id,bpc.final")["rows"]
    assert sorted(row["bpc.final"] for row in low) == pytest.approx([1.9, 2.0, 2.1, 2.2])
    assert trials(client, "status=failed")["rows"] == []
    assert len(trials(client, "budget=300000..")["rows"]) == 6


def test_sort_and_cursor_pages_return_every_row_once_in_order(client, grid):
    seen, cursor = [], None
    while True:
        query = "sort=-bpc.final&fields=id,bpc.final&limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = trials(client, query)
        assert len(page["rows"]) <= 5
        seen += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(row["id"] for row in seen) == sorted(grid)
    values = [row["bpc.final"] for row in seen]
    assert values == sorted(values, reverse=True)


def test_projection_returns_only_the_named_columns(client, grid):
    page = trials(client, "fields=id,k_e,metric.best&limit=2")
    assert page["fields"] == ["id", "k_e", "bpc.best"]
    assert all(list(row) == page["fields"] for row in page["rows"])


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("d_m=abc", "d_m"),
        ("d_m=2.5", "d_m"),
        ("budget=..", "budget"),
        ("status=done", "status"),
        ("status=a..b", "status"),
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("sort=nonsense", "nonsense"),
        ("fields=id,nope", "nope"),
        ("cursor=not-a-cursor", "cursor"),
        ("rho_rec=nan", "rho_rec"),
    ],
)
def test_bad_query_is_422_naming_the_problem(client, grid, query, named):
    assert named in trials(client, query, 422)["detail"]
