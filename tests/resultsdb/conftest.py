"""Fixtures for the results database tests."""

from __future__ import annotations

import pytest
from store_helpers import create_sweep

from resultsdb import ResultsStore


@pytest.fixture
def trial_ids(store: ResultsStore) -> list[str]:
    """Six pending trials of sweep "pareto" (metric bpc: min; accuracy: max)."""
    return create_sweep(store, trials=6)
