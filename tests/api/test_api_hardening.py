"""Hardening: /healthz on a stopped database tells an anonymous caller nothing about the database, and every answer
carries the security headers (CSP, X-Frame-Options, nosniff)."""

from __future__ import annotations

import logging

from apitesting import API, make_client

from api.security import DOCS_POLICY, PAGE_POLICY
from resultsdb import ResultsStore

STOPPED_DATABASE = "postgresql+psycopg://elmscale_user@127.0.0.1:1/elmscale_db"  # nothing listens on port 1


def test_healthz_on_a_stopped_database_names_neither_its_url_nor_the_driver_error(caplog):
    with ResultsStore(STOPPED_DATABASE) as store, make_client(store) as client, caplog.at_level(logging.WARNING):
        answer = client.get(f"{API}/healthz")

    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    for secret in ("127.0.0.1", "elmscale_user", "elmscale_db", "psycopg", "postgresql", "refused"):
        assert secret not in answer.text.lower()
    assert "127.0.0.1" in caplog.text and "elmscale_db" in caplog.text  # the details are in the server log


def security_headers(answer) -> dict[str, str]:
    return {name: answer.headers.get(name) for name in
            ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")}


def test_every_answer_carries_the_security_headers(client):
    page_headers = {"Content-Security-Policy": PAGE_POLICY, "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff"}
    for path in (f"{API}/sweeps", f"{API}/sweeps/nope", f"{API}/healthz", "/", "/static/dashboard.js",
                 "/openapi.json", "/no-such-page"):
        assert security_headers(client.get(path)) == page_headers, path
    with client.stream("GET", f"{API}/feed", params={"timeout": 0}) as feed:
        assert security_headers(feed) == page_headers
    for path in ("/docs", "/redoc"):
        assert security_headers(client.get(path)) == {**page_headers, "Content-Security-Policy": DOCS_POLICY}, path


def test_a_503_from_any_route_names_neither_the_databases_url_nor_the_driver_error(caplog):
    with ResultsStore(STOPPED_DATABASE) as store, make_client(store) as client, caplog.at_level(logging.WARNING):
        answer = client.get(f"{API}/sweeps")

    assert answer.status_code == 503 and answer.headers["Retry-After"]
    for secret in ("127.0.0.1", "elmscale_user", "elmscale_db", "psycopg", "postgresql", "refused"):
        assert secret not in answer.text.lower()
    assert "elmscale_db" in caplog.text  # the cause stays in the server's log
