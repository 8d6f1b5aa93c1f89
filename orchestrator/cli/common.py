"""What every command shares: the consoles, the --db and --address options, and user errors.

Every error a user can cause prints one line per problem and exits with status 2.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from resultsdb import (
    ConflictError,
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    InvalidQuery,
    NotFound,
    ResultsStore,
    SweepLeaseHeld,
    database_url,
    schema_head,
    schema_revision,
    upgrade_schema,
)

from ..sink import OutboxUnwritable
from ..spec import SpecError, SweepSpec, parse_spec

console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get the whole table
errors = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="ELMSCALE_DATABASE_URL",
        help="Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (default: sqlite:///elmscale.db).",
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address", envvar="RAY_ADDRESS",
        help="Address of an existing Ray cluster, or 'auto' on one of its nodes (default: start a local one).",
    ),
]


class UserError(Exception):
    """A problem the user can fix; each line is printed as it is."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = lines


def fail(*lines: str) -> None:
    for line in lines:
        errors.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line each and exit status 2; no traceback."""
    try:
        yield
    except SpecError as error:
        fail(*error.problems)
    except UserError as error:
        fail(*error.lines)
    except NotFound as error:
        fail(f"{error} (see `orchestrator list`)" if error.kind == "sweep" else str(error))
    except SweepLeaseHeld as error:
        fail(f"{error}; `--force` takes it over")
    except (ConflictError, DatabaseUnavailable, InvalidDatabaseUrl, InvalidQuery, OutboxUnwritable) as error:
        fail(str(error))


def interval_text(estimate: Any, spec: str) -> str:
    """'value [low, high]' of an estimate (value, ci_low, ci_high); an open or unknown side shows as '?' (an optimum
    at the grid's edge), no estimate as ''."""
    if estimate is None:
        return ""
    ends = ["?" if not math.isfinite(end) else format(end, spec) for end in (estimate.ci_low, estimate.ci_high)]
    return f"{format(estimate.value, spec)} [{ends[0]}, {ends[1]}]"


def open_store(db: str | None, *, migrate: bool = False, create: bool = False) -> ResultsStore:
    """The results store at `db`, which must exist at the newest schema revision.

    Only commands that write pass `migrate` (bring an older schema up to date) or `create` (also make the
    database where there is none); reading commands never change a database, nor create a file.
    """
    revision = schema_revision(db)
    shown = database_url(db, hide_password=True)
    if revision is None and not create:
        raise UserError(f"no elmscale database at {shown}: `orchestrator submit SPEC` (or `orchestrator db upgrade`) "
                        "creates one; --db or ELMSCALE_DATABASE_URL selects another")
    if revision != schema_head():
        if not (migrate or create):
            raise UserError(f"the database at {shown} is at schema revision {revision}, not the newest "
                            f"({schema_head()}): run `orchestrator db upgrade`")
        upgrade_schema(db)
    return ResultsStore(db)


def spec_of(store: ResultsStore, name: str) -> tuple[SweepSpec, str]:
    """The spec a sweep was recorded with, and its text; UserError for an ingested sweep, which has none."""
    sweep = store.find_sweep(name)
    if sweep.ingested:
        raise UserError(f"sweep {name!r} was ingested: nothing to run")
    return parse_spec(sweep.spec_text, f"sweep {name}"), sweep.spec_text
