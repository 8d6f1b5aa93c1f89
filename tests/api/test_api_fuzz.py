"""Schema-driven fuzzing (schemathesis) of every operation in the OpenAPI document, against the real app on
Postgres: no server errors, and every response matches the documented status codes, media types and schemas."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from store_helpers import seeded_budget_sweep

from api.app import API_PREFIX as API
from api.app import create_app
from api.settings import ApiSettings
from resultsdb import ResultsStore, migrate

PATHS = [
    "/sweeps", "/sweeps/{name}", "/sweeps/{name}/trials", "/sweeps/{name}/frontier", "/sweeps/{name}/optimum",
    "/sweeps/{name}/laws", "/sweeps/{name}/laws/{law}", "/sweeps/{name}/export", "/trials/{trial_id}",
    "/trials/{trial_id}/series", "/feed",
    "/sweeps/{name}/results", "/sweeps/{name}/predictions", "/predictions", "/healthz",
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def fuzz_target(postgres_url):
    """(schemathesis schema of the app on a fresh Postgres holding one sweep, write-token header)."""
    migrate.upgrade(postgres_url)
    with ResultsStore(postgres_url) as store:
        seeded_budget_sweep(store, "budgets")
        token = store.create_token("fuzzer")
        app = create_app(store, ApiSettings(database_url=postgres_url, feed_poll_s=0.01))
        yield schemathesis.openapi.from_asgi("/openapi.json", app), {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", PATHS)
def test_no_server_errors_and_responses_match_the_schema(fuzz_target, path):
    """Runs the operations of one path; schemathesis' pytest plugin is not used (it breaks on pytest 9)."""
    schema, auth = fuzz_target
    for result in schema.include(path_regex=f"^{re.escape(API + path)}$").get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            if path == "/feed":
                case.query = {**(case.query or {}), "timeout": 0.05}  # keep each stream short
            if "/laws" in path or path.endswith("/optimum"):
                case.query = {**(case.query or {}), "n_bootstrap": 20}
            case.call_and_validate(headers=auth, checks=CHECKS)

        call()
