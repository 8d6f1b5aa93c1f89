"""What the store raises for a caller's mistake, and for a database out of reach."""

from __future__ import annotations

from datetime import datetime


class NotFound(LookupError):
    """A sweep, trial or token named by the caller does not exist; `kind` and `key` say which."""

    def __init__(self, kind: str, key: str, hint: str | None = None) -> None:
        super().__init__(f"{kind} {key!r} does not exist" + (f" ({hint})" if hint else ""))
        self.kind, self.key, self.hint = kind, key, hint

    def __reduce__(self):
        return type(self), (self.kind, self.key, self.hint)


class ConflictError(ValueError):
    """The write contradicts what is stored (a sweep name reused with another spec, a token name taken)."""


class OverwriteRefused(ConflictError):
    """An ingest would change a trial of an orchestrated sweep and does not allow overwrites; `trial_id` says which."""

    def __init__(self, sweep: str, trial_id: str, change: str) -> None:
        super().__init__(f"trial {trial_id} of orchestrated sweep {sweep!r} would change ({change})")
        self.sweep, self.trial_id, self.change = sweep, trial_id, change

    def __reduce__(self):
        return type(self), (self.sweep, self.trial_id, self.change)


class SweepLeaseHeld(ConflictError):
    """Another driver holds the sweep's lease: its process is alive, or its heartbeat is recent."""

    def __init__(self, sweep: str, host: str, pid: int, since: datetime) -> None:
        when = f"{since.astimezone():%H:%M:%S}"  # local time
        super().__init__(f"sweep {sweep!r} is being run by pid {pid} on host {host} since {when}")
        self.sweep, self.host, self.pid, self.since = sweep, host, pid, since

    def __reduce__(self):
        return type(self), (self.sweep, self.host, self.pid, self.since)


class InvalidQuery(ValueError):
    """A trial query the store cannot run: an unknown field or stat, an unsortable field, a foreign cursor."""


class InvalidDatabaseUrl(ValueError):
    """A database URL that does not parse, or names a backend other than SQLite and Postgres (psycopg 3)."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened, every pooled connection stays busy, or a read ran past its statement
    timeout; the caller may spool and retry later."""


class UnknownMetric(InvalidQuery):
    """A metric the sweep neither declares nor has a result of; the message lists the sweep's metrics."""

    def __init__(self, sweep: str, metric: str, known: list[str]) -> None:
        super().__init__(f"metric {metric!r} is not reported in sweep {sweep!r} (its metrics: {', '.join(known)})")
        self.sweep, self.metric, self.known = sweep, metric, known

    def __reduce__(self):
        return type(self), (self.sweep, self.metric, self.known)
