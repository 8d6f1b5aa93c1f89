"""`orchestrator db ...`: the database schema (Alembic migrations)."""

from __future__ import annotations

import typer

from resultsdb import schema_head, schema_revision, upgrade_schema

from .common import DbOption, console, user_errors

app = typer.Typer()  # its commands join the main app (orchestrator.cli)

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply all migrations to the database."""
    with user_errors():
        upgrade_schema(db)
        console.print(f"database at revision {schema_revision(db)}")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the database's migration revision and whether it is the latest."""
    with user_errors():
        revision = schema_revision(db)
        state = " (head)" if revision == schema_head() else " (behind: run `orchestrator db upgrade`)"
        console.print(f"{revision or '(empty)'}{state}")
