"""API bearer tokens: random, shown once when created; the database keeps only their sha256."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "elm_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
