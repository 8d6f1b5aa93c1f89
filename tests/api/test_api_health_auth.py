"""GET /healthz, token-only reads, and the OpenAPI document."""

from __future__ import annotations

from apitesting import API, make_client

from resultsdb import ResultsStore


def test_healthz_is_ok_on_a_migrated_database(client):
    answer = client.get(f"{API}/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert answer.json()["revision"] == answer.json()["head"]


def test_healthz_is_503_on_a_database_never_migrated(db_url):
    with ResultsStore(db_url) as store, make_client(store) as client:
        answer = client.get(f"{API}/healthz")
    assert answer.status_code == 503 and answer.json()["revision"] is None
    assert "upgrade" in answer.json()["detail"] and "Retry-After" not in answer.headers  # waiting will not fix it


def test_reads_need_a_token_when_the_setting_says_so(store):
    token = store.create_token("reader")
    with make_client(store, read_token_required=True) as client:
        assert client.get(f"{API}/sweeps").status_code == 401
        assert client.get(f"{API}/sweeps", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get(f"{API}/healthz").status_code == 200


def test_openapi_document_and_docs_page_are_served(client):
    document = client.get("/openapi.json").json()
    assert f"{API}/sweeps/{{name}}/frontier" in document["paths"]
    assert "a..b" in document["paths"][f"{API}/sweeps/{{name}}/trials"]["get"]["description"]
    assert client.get("/docs").status_code == 200
