"""The `orchestrator` command line: plan, submit, resume and inspect sweeps, analyse them, serve the API.

One module per concern holds its commands: sweeps (plan, submit, resume, retry-failed, list, status, cancel,
export), analysis (frontier, fit, suggest, plot), predictions, service (token, serve) and db (db upgrade,
db current).
Every error a user can cause prints one line per problem and exits with status 2.
"""

from __future__ import annotations

import typer

from . import analysis, db, predictions, service, sweeps

app = typer.Typer(
    help="Scaling-law sweeps of ELM networks on Ray Tune, results in a SQL database.\n\n"
    "Example: orchestrator submit sweeps/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for commands in (sweeps.app, analysis.app, predictions.app, service.app, db.app):
    app.add_typer(commands)


def main() -> None:
    app(prog_name="orchestrator")


__all__ = ["app", "main"]
