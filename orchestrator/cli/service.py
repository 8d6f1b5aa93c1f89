"""The API service: `orchestrator serve`, and the bearer tokens of its write endpoints."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn

from .common import DbOption, UserError, console, open_store, user_errors

app = typer.Typer()  # its commands join the main app (orchestrator.cli)

token_app = typer.Typer(help="Bearer tokens for the API's write endpoints.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(name: str, db: DbOption = None) -> None:
    """Create a token (printed once; only its hash is stored)."""
    with user_errors():
        token = open_store(db, create=True).create_token(name)
    console.print(token, highlight=False)


@token_app.command("revoke")
def token_revoke(name: str, db: DbOption = None) -> None:
    """Revoke a token by name."""
    with user_errors():
        if not open_store(db, migrate=True).revoke_token(name):
            raise UserError(f"no active token named {name!r}")
    console.print(f"revoked {name}")


@token_app.command("list")
def token_list(db: DbOption = None) -> None:
    """Tokens by name, with creation and revocation times."""
    with user_errors():
        tokens = open_store(db).list_tokens()
    for token in tokens:
        console.print(f"{token.name}  created {token.created_at:%Y-%m-%d %H:%M}"
                      + (f"  revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else ""))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: DbOption = None,
) -> None:
    """Start the API and dashboard (FastAPI under uvicorn); OpenAPI docs at /docs. It never migrates the database."""
    with user_errors():
        open_store(db).close()
    if db:
        os.environ["ELMSCALE_DATABASE_URL"] = db
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info")
