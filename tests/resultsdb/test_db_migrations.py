"""Migrations are the schema: they build exactly the models' tables and indexes on both backends."""

from __future__ import annotations

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from store_helpers import seeded_budget_sweep

from resultsdb import ResultsStore, make_engine, migrate
from resultsdb.migrate import VERSION_TABLE
from resultsdb.models import Base


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_the_models_schema(db_url):
    migrate.upgrade(db_url)

    assert schema_differences(db_url) == []
    assert table_names(db_url) == set(Base.metadata.tables) | {VERSION_TABLE}


def test_schema_comparison_notices_a_missing_index(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_trial_sweep_id_d_m"))
    engine.dispose()

    differences = schema_differences(db_url)

    assert [(kind, index.name) for kind, index in differences] == [("add_index", "ix_trial_sweep_id_d_m")]


def test_the_summary_index_covers_best_value_on_postgres(postgres_url):
    """Autogenerate does not compare INCLUDE columns, so this checks them."""
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    try:
        (index,) = inspect(engine).get_indexes("trial_summary")
    finally:
        engine.dispose()

    assert (index["column_names"], index["dialect_options"]) == (
        ["metric", "trial_id"],
        {"postgresql_include": ["best_value"]},
    )


def test_upgrade_downgrade_upgrade_round_trip(db_url):
    assert migrate.current(db_url) is None
    assert not migrate.is_at_head(db_url)

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    assert migrate.is_at_head(db_url)

    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    assert table_names(db_url) == {VERSION_TABLE}

    migrate.upgrade(db_url)
    assert migrate.is_at_head(db_url)
    assert schema_differences(db_url) == []


RECORDED_PREDICTION = {"budget": 4000, "law": "allocation+frontier", "n_bootstrap": 20, "snapshot_hash": "0" * 64,
                       "n_trials": 8, "budgets": [1000, 2000],
                       **{name: {"value": 1.0, "ci_low": 0.5, "ci_high": 2.0}
                          for name in ("d_m", "n_hidden", "k_e", "metric")}}


def revisions_newest_first() -> list[str]:
    return [script.revision for script in ScriptDirectory.from_config(migrate._config()).walk_revisions()]


def test_each_downgrade_step_keeps_the_data_and_upgrading_again_restores_the_schema(db_url):
    migrate.upgrade(db_url)
    with ResultsStore(db_url) as store:
        seeded_budget_sweep(store)
        store.write_results([(trial_id, step, {"bpc": 2.0 - step / 10}, float(step))
                             for trial_id in store.summary_frame("budgets")["id"] for step in (1, 2)])
        store.create_prediction("budgets", RECORDED_PREDICTION)
        before = store.summary_frame("budgets")
    revisions = revisions_newest_first()
    assert revisions[-1] == "0001" and len(revisions) >= 2

    for older in revisions[1:]:  # one revision at a time, e.g. 0002 -> 0001
        migrate.downgrade(db_url, older)
        assert migrate.current(db_url) == older
        assert row_counts(db_url) == {"sweep": 1, "trial": 8, "metric_series": 16, "trial_summary": 8}
        # 0004 made it: downgrading past it with a prediction recorded drops the prediction alone
        assert ("prediction" in table_names(db_url)) == (older >= "0004")

    migrate.upgrade(db_url)
    assert schema_differences(db_url) == []
    with ResultsStore(db_url) as store:
        pd.testing.assert_frame_equal(store.summary_frame("budgets"), before)


def row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                    for table in ("sweep", "trial", "metric_series", "trial_summary")}
    finally:
        engine.dispose()


def test_migrations_run_from_any_working_directory(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    migrate.upgrade(sqlite_url)

    assert migrate.is_at_head(sqlite_url)


@pytest.mark.parametrize("url_env", [True, False])
def test_migrate_uses_the_configured_url_by_default(url_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if url_env:
        monkeypatch.setenv("ELMSCALE_DATABASE_URL", f"sqlite:///{tmp_path / 'configured.db'}")
    else:
        monkeypatch.delenv("ELMSCALE_DATABASE_URL", raising=False)

    migrate.upgrade()

    assert migrate.is_at_head()
    assert (tmp_path / ("configured.db" if url_env else "elmscale.db")).exists()
