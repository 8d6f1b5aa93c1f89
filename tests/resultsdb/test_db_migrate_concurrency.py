"""Concurrent migrations: processes upgrading one fresh database at once all succeed (one waits for the other),
and the schema ends at head with no differences from the models, on both backends."""

from __future__ import annotations

import multiprocessing

from test_db_migrations import schema_differences

from resultsdb import migrate

MIGRATORS = 2


def upgrade_after_barrier(url: str, start) -> None:
    """Migration worker: wait for the others, then upgrade (an exception exits the process with code 1)."""
    start.wait(timeout=60)
    migrate.upgrade(url)


def test_two_processes_upgrading_one_fresh_database_at_once_both_succeed(db_url):
    # fork: the migrators start in milliseconds, so they reach the empty database together.
    context = multiprocessing.get_context("fork")
    start = context.Barrier(MIGRATORS)
    migrators = [context.Process(target=upgrade_after_barrier, args=(db_url, start)) for _ in range(MIGRATORS)]
    for migrator in migrators:
        migrator.start()
    for migrator in migrators:
        migrator.join(timeout=120)

    assert [migrator.exitcode for migrator in migrators] == [0] * MIGRATORS
    assert migrate.is_at_head(db_url)
    assert schema_differences(db_url) == []
