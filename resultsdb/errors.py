"""What the store raises for a caller's mistake, and for a database out of reach."""

from __future__ import annotations


class NotFound(LookupError):
    """A sweep, trial or token named by the caller does not exist; `kind` and `key` say which."""

    def __init__(self, kind: str, key: str, hint: str | None = None) -> None:
        super().__init__(f"{kind} {key!r} does not exist" + (f" ({hint})" if hint else ""))
        self.kind, self.key, self.hint = kind, key, hint

    def __reduce__(self):
        return type(self), (self.kind, self.key, self.hint)


class ConflictError(ValueError):
    """The write contradicts what is stored (a sweep name reused with another spec, a token name taken)."""


class InvalidQuery(ValueError):
    """A trial query the store cannot run: an unknown field or stat, an unsortable field, a foreign cursor."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened; the caller may spool and retry later."""
