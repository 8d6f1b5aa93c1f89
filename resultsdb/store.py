"""ResultsStore: the one interface to the results database (Optuna-storage style).

The orchestrator, API and CLI call only this class; no session or SQL lives outside resultsdb.
Every method runs in its own short transaction; writes retry deadlocks/serialization failures
with bounded backoff, and an unreachable database raises ``DatabaseUnavailable``.

    store = ResultsStore()            # URL from ELMSCALE_DATABASE_URL, else sqlite:///elmscale.db
    store = ResultsStore("postgresql+psycopg://user@host/db")   # or an Engine

Sweeps
    create_sweep(name, *, task, metric, mode, spec_text, metric_modes=None, code_version=None) -> SweepInfo
        Idempotent for the same spec text; ConflictError when the name exists with another spec.
        metric_modes: {metric: "min"|"max"} for reported metrics other than `metric`; a metric not
        listed keeps its best by the sweep's `mode`.
    get_sweep(name) -> SweepInfo | None;  list_sweeps() -> list[SweepInfo]  (with trial counts by status)
    set_sweep_status(name, status) -> bool (changed)
Trials
    add_trials(sweep, trials) -> list[str]: each trial a mapping with `config`, `seed` and the
        allocation columns (budget may be None); ids are trial_id(sweep, config, seed); idempotent.
    set_trial_status(trial_id, status, *, error=None, node=None, device=None, final=None, at=None) -> bool
        "running" from another status counts an attempt; terminal statuses set ended_at;
        `final` = {metric: test value} stored as the summaries' final value. Repeating the current
        status, or a change older (`at`, when it happened) than the current one, changes nothing
        and appends no event: pass `at` when replaying a log.
Results
    write_results(batch) -> int (points changed): items (trial_id, step, {metric: value}, wall_time).
        Idempotent and order-independent (see resultsdb.writes); NaN is stored as NULL; split into
        transactions of at most MAX_POINTS_PER_TRANSACTION points.
Queries
    query_trials(sweep, *, where=None, sort="id", fields=None, limit=100, cursor=None) -> TrialPage
        where: {field: Range(low, high) | set of values | value}; a field is a trial column or
        "<metric>.<stat>" (stat: last, last_step, min, max, best, best_step, final), e.g.
        where={"budget": Range(1e5, 1e6), "status": {"completed"}, "bpc.best": Range(high=1.5)},
        sort="-bpc.best" (descending; NULLs last, ties by id). Pass page.next_cursor to continue.
    series(trial_id, metric, max_points=1000) -> list[SeriesPoint]  (downsampled, last point kept)
    summary_frame(sweep) -> pandas.DataFrame: one row per trial, columns id, status, allocation
        columns, and "<metric>.<stat>" for every reported metric.
Events (live feed)
    record_event(kind, payload=None, *, sweep=None, trial_id=None) -> int
    events_since(after_id=0, *, sweep=None, limit=1000) -> list[EventInfo]; ids grow in commit order.
        Appended automatically: sweep_created, sweep_<status>, trials_added, trial_<status>, and per
        write transaction and sweep one "results" event: {"trials": {trial_id: {"step", "values"}}}.
API tokens
    create_token(name) -> str (shown once; only its sha256 is stored);  verify_token(token) -> str | None
    (the token's name while not revoked);  revoke_token(name) -> bool;  list_tokens() -> list[TokenInfo]
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, exc, func, select, update

from resultsdb import writes
from resultsdb.engine import connect, make_engine
from resultsdb.ids import trial_id as make_trial_id
from resultsdb.models import (
    ALLOCATION_COLUMNS,
    ApiToken,
    Event,
    MetricMode,
    Sweep,
    SweepStatus,
    Trial,
    TrialStatus,
    TrialSummary,
)
from resultsdb.queries import (
    DATETIME_FIELDS,
    DEFAULT_FIELDS,
    SUMMARY_STATS,
    Condition,
    build_trial_query,
    downsampled_series,
    encode_cursor,
    utc,
)

if TYPE_CHECKING:
    import pandas

MAX_POINTS_PER_TRANSACTION = 5_000
MAX_ATTEMPTS = 6
TERMINAL_TRIAL_STATUSES = {TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.STOPPED_EARLY}
TERMINAL_SWEEP_STATUSES = {SweepStatus.COMPLETED, SweepStatus.FAILED, SweepStatus.STOPPED}
# Postgres serialization_failure and deadlock_detected.
RETRYABLE_SQLSTATES = {"40001", "40P01"}

Result = TypeVar("Result")


class NotFound(LookupError):
    """A sweep, trial or token named by the caller does not exist."""


class ConflictError(ValueError):
    """The write contradicts what is stored (a sweep name reused with another spec, a token name taken)."""


@dataclass(frozen=True)
class SweepInfo:
    id: int
    name: str
    task: str
    metric: str
    mode: str
    metric_modes: dict[str, str]
    spec_text: str
    spec_hash: str
    status: str
    code_version: str | None
    created_at: datetime
    finished_at: datetime | None
    trial_counts: dict[str, int]


@dataclass(frozen=True)
class TrialPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class SeriesPoint:
    step: int
    value: float | None
    wall_time: float


@dataclass(frozen=True)
class EventInfo:
    id: int
    created_at: datetime
    kind: str
    sweep: str | None
    trial_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None


def spec_hash(spec_text: str) -> str:
    return hashlib.sha256(spec_text.encode()).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _is_retryable(error: exc.DBAPIError) -> bool:
    if getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig)


def _choice(field: str, value: str, allowed: type[MetricMode] | type[TrialStatus] | type[SweepStatus]) -> str:
    if value not in {member.value for member in allowed}:
        raise ValueError(f"{field} {value!r}: expected one of {', '.join(member.value for member in allowed)}")
    return str(value)


class ResultsStore:
    """Sweeps, trials, results, events and API tokens in one database (see the module docstring)."""

    def __init__(self, url_or_engine: str | Engine | None = None) -> None:
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self.engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
        # Sweep and mode of a trial never change, so the writer looks each trial up once.
        self._trial_contexts: dict[str, writes.TrialContext] = {}

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def _read(self, work: Callable[[Connection], Result]) -> Result:
        with connect(self.engine) as connection:
            return work(connection)

    def _write(self, work: Callable[[Connection], Result]) -> Result:
        """Run `work` in a write transaction, retrying deadlocks and lock timeouts with backoff."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                with connect(self.engine, write=True) as connection:
                    return work(connection)
            except exc.DBAPIError as error:
                if attempt == MAX_ATTEMPTS - 1 or not _is_retryable(error):
                    raise
            time.sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # Sweeps

    def create_sweep(
        self,
        name: str,
        *,
        task: str,
        metric: str,
        mode: str,
        spec_text: str,
        metric_modes: Mapping[str, str] | None = None,
        code_version: str | None = None,
    ) -> SweepInfo:
        """Create a sweep, or return the existing one when it was created from the same spec text."""
        modes = {name_: _choice(f"mode of {name_}", m, MetricMode) for name_, m in (metric_modes or {}).items()}
        modes[metric] = _choice("mode", mode, MetricMode)
        digest = spec_hash(spec_text)

        def create(connection: Connection) -> None:
            inserted = connection.execute(
                writes.dialect_insert(connection, Sweep)
                .values(
                    name=name,
                    task=task,
                    metric=metric,
                    mode=mode,
                    metric_modes=dict(sorted(modes.items())),
                    spec_text=spec_text,
                    spec_hash=digest,
                    status=SweepStatus.PENDING,
                    code_version=code_version,
                    created_at=writes.now(),
                )
                .on_conflict_do_nothing(index_elements=[Sweep.name])
                .returning(Sweep.id)
            ).scalar()
            if inserted is not None:
                event = {"kind": "sweep_created", "sweep_id": inserted, "payload": {"name": name}}
                writes.append_events(connection, [event])

        self._write(create)
        sweep = self.get_sweep(name)
        assert sweep is not None
        if sweep.spec_hash != digest:
            raise ConflictError(f"sweep {name!r} already exists with a different spec (hash {sweep.spec_hash[:12]})")
        return sweep

    def get_sweep(self, name: str) -> SweepInfo | None:
        sweeps = self._read(lambda connection: self._sweep_infos(connection, name))
        return sweeps[0] if sweeps else None

    def list_sweeps(self) -> list[SweepInfo]:
        return self._read(lambda connection: self._sweep_infos(connection, None))

    def _sweep_infos(self, connection: Connection, name: str | None) -> list[SweepInfo]:
        statement = select(Sweep.__table__).order_by(Sweep.id)
        counts_statement = select(Trial.sweep_id, Trial.status, func.count()).group_by(Trial.sweep_id, Trial.status)
        if name is not None:
            statement = statement.where(Sweep.name == name)
            counts_statement = counts_statement.join(Sweep, Sweep.id == Trial.sweep_id).where(Sweep.name == name)
        counts: dict[int, dict[str, int]] = {}
        for sweep_id, status, count in connection.execute(counts_statement):
            counts.setdefault(sweep_id, {})[status] = count
        return [
            SweepInfo(
                id=row.id,
                name=row.name,
                task=row.task,
                metric=row.metric,
                mode=row.mode,
                metric_modes=row.metric_modes,
                spec_text=row.spec_text,
                spec_hash=row.spec_hash,
                status=row.status,
                code_version=row.code_version,
                created_at=utc(row.created_at),
                finished_at=utc(row.finished_at),
                trial_counts=dict(sorted(counts.get(row.id, {}).items())),
            )
            for row in connection.execute(statement)
        ]

    def _sweep_id(self, connection: Connection, name: str) -> int:
        sweep_id = connection.execute(select(Sweep.id).where(Sweep.name == name)).scalar()
        if sweep_id is None:
            raise NotFound(f"sweep {name!r} does not exist")
        return sweep_id

    def set_sweep_status(self, name: str, status: str) -> bool:
        """Set a sweep's status; terminal statuses record the finish time. Returns whether it changed."""
        _choice("sweep status", status, SweepStatus)

        def change(connection: Connection) -> bool:
            sweep_id = self._sweep_id(connection, name)
            finished_at = writes.now() if status in TERMINAL_SWEEP_STATUSES else None
            changed = connection.execute(
                update(Sweep)
                .where(Sweep.id == sweep_id, Sweep.status != status)
                .values(status=status, finished_at=finished_at)
            ).rowcount
            if changed:
                event = {"kind": f"sweep_{status}", "sweep_id": sweep_id, "payload": {"status": status}}
                writes.append_events(connection, [event])
            return bool(changed)

        return self._write(change)

    # Trials

    def add_trials(self, sweep: str, trials: Iterable[Mapping[str, Any]]) -> list[str]:
        """Persist planned trials as pending; returns their ids in the given order (new or already present)."""
        created_at = writes.now()
        rows = []
        for index, trial in enumerate(trials):
            required = ("config", "seed", *(column for column in ALLOCATION_COLUMNS if column != "budget"))
            missing = [field for field in required if field not in trial]
            if missing:
                raise ValueError(f"trial {index}: missing field {missing[0]!r}")
            row = {column: trial.get(column) for column in ALLOCATION_COLUMNS}
            row.update(
                id=make_trial_id(sweep, trial["config"], trial["seed"]),
                config=trial["config"],
                status=TrialStatus.PENDING,
                attempts=0,
                created_at=created_at,
            )
            rows.append(row)
        ids_in_given_order = [row["id"] for row in rows]
        rows.sort(key=lambda row: row["id"])

        def add(connection: Connection) -> None:
            sweep_id = self._sweep_id(connection, sweep)
            if not rows:
                return
            for row in rows:
                row["sweep_id"] = sweep_id
            inserted = connection.execute(
                writes.dialect_insert(connection, Trial)
                .on_conflict_do_nothing(index_elements=[Trial.id])
                .returning(Trial.id),
                rows,
            ).all()
            if inserted:
                event = {"kind": "trials_added", "sweep_id": sweep_id, "payload": {"count": len(inserted)}}
                writes.append_events(connection, [event])

        self._write(add)
        return ids_in_given_order

    def set_trial_status(
        self,
        trial_id: str,
        status: str,
        *,
        error: str | None = None,
        node: str | None = None,
        device: str | None = None,
        final: Mapping[str, float] | None = None,
        at: datetime | float | None = None,
    ) -> bool:
        """Record a trial's status change; returns whether the status changed.

        `at` is when the change happened (datetime or epoch seconds; default now). A change older
        than the trial's current status is ignored, so replaying a log of changes is harmless.
        Repeating the current status only records node/device when given.
        """
        _choice("trial status", status, TrialStatus)
        if at is None:
            changed_at = writes.now()
        elif isinstance(at, datetime):
            changed_at = utc(at)
        else:
            changed_at = datetime.fromtimestamp(at, UTC)

        def change(connection: Connection) -> bool:
            current = connection.execute(
                select(Trial.sweep_id, Trial.status, Trial.attempts, Trial.status_at)
                .where(Trial.id == trial_id)
                .with_for_update(key_share=True)
            ).one_or_none()
            if current is None:
                raise NotFound(f"trial {trial_id!r} does not exist")
            if final:
                writes.set_final_values(connection, trial_id, final)
            stale = current.status_at is not None and changed_at < utc(current.status_at)
            if current.status == status and not stale:
                # Where a trial runs is known only after it started: record it without a status change.
                placement = {k: v for k, v in (("node", node), ("device", device)) if v is not None}
                if placement:
                    connection.execute(update(Trial).where(Trial.id == trial_id).values(**placement))
            if current.status == status or stale:
                return False
            values: dict[str, Any] = {"status": status, "status_at": changed_at}
            if node is not None:
                values["node"] = node
            if device is not None:
                values["device"] = device
            if status == TrialStatus.RUNNING:
                values.update(attempts=current.attempts + 1, started_at=changed_at, ended_at=None, error=None)
            elif status in TERMINAL_TRIAL_STATUSES:
                values.update(ended_at=changed_at, error=error)
            connection.execute(update(Trial).where(Trial.id == trial_id).values(**values))
            payload = {"status": status, "attempts": values.get("attempts", current.attempts)}
            if error is not None:
                payload["error"] = error
            event = {"kind": f"trial_{status}", "sweep_id": current.sweep_id, "trial_id": trial_id, "payload": payload}
            writes.append_events(connection, [event])
            return True

        return self._write(change)

    # Results

    def write_results(self, batch: Iterable[tuple[str, int, Mapping[str, float | None], float]]) -> int:
        """Upsert (trial_id, step, {metric: value}, wall_time) items; returns how many stored points changed."""
        rows = writes.point_rows(batch)
        postgres = self.engine.dialect.name == "postgresql"
        points = writes.CopyBatch(rows) if postgres else writes.PointBatch.from_rows(rows)
        changed = 0
        for chunk in points.chunks(MAX_POINTS_PER_TRANSACTION):
            changed += self._write(lambda connection, chunk=chunk: self._write_chunk(connection, chunk))
        return changed

    def _write_chunk(self, connection: Connection, chunk: writes.PointBatch | writes.CopyBatch) -> int:
        unknown = chunk.trial_ids - self._trial_contexts.keys()
        if unknown:
            self._trial_contexts.update(writes.trial_contexts(connection, unknown))
            missing = sorted(unknown - self._trial_contexts.keys())
            if missing:
                raise NotFound(f"trial {missing[0]!r} does not exist (add it with add_trials first)")
        changed, changes = chunk.write(connection, self._trial_contexts)
        writes.append_events(connection, writes.result_events(changes, self._trial_contexts))
        return changed

    # Queries

    def query_trials(
        self,
        sweep: str,
        *,
        where: Mapping[str, Condition] | None = None,
        sort: str = "id",
        fields: Iterable[str] | None = None,
        limit: int | None = 100,
        cursor: str | None = None,
    ) -> TrialPage:
        """One page of a sweep's trials; fields default to id, status and the allocation columns."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit {limit}: must be at least 1")

        def run(connection: Connection) -> TrialPage:
            statement, field_list, parsed_sort = build_trial_query(
                self._sweep_id(connection, sweep),
                where or {},
                sort,
                fields or DEFAULT_FIELDS,
                limit,
                cursor,
            )
            rows = connection.execute(statement).all()
            next_cursor = None
            if limit is not None and len(rows) > limit:
                rows = rows[:limit]
                next_cursor = encode_cursor(parsed_sort, rows[-1]._sort_value, rows[-1]._trial_id)
            # Each row ends with the sort key columns, which zip() leaves out.
            page_rows = [dict(zip(field_list, row)) for row in rows]
            for field in DATETIME_FIELDS.intersection(field_list):
                for page_row in page_rows:
                    page_row[field] = utc(page_row[field])
            return TrialPage(rows=page_rows, next_cursor=next_cursor)

        return self._read(run)

    def series(self, trial_id: str, metric: str, max_points: int = 1000) -> list[SeriesPoint]:
        """A trial's points of one metric by step, thinned to at most `max_points` (the last kept)."""
        if max_points < 1:
            raise ValueError(f"max_points {max_points}: must be at least 1")
        statement = downsampled_series(trial_id, metric, max_points)
        rows = self._read(lambda connection: connection.execute(statement).all())
        return [SeriesPoint(row.step, row.value, row.wall_time) for row in rows]

    def summary_frame(self, sweep: str) -> pandas.DataFrame:
        """One row per trial: id, status, allocation columns, attempts, error, node, device, start/end times,
        then "<metric>.<stat>" columns."""
        import pandas

        trial_columns = [
            Trial.id, Trial.status, *(getattr(Trial, column) for column in ALLOCATION_COLUMNS),
            Trial.attempts, Trial.error, Trial.node, Trial.device, Trial.started_at, Trial.ended_at,
        ]
        summary_columns = [getattr(TrialSummary, column) for column in SUMMARY_STATS.values()]

        def run(connection: Connection) -> tuple[list[Any], list[Any]]:
            sweep_id = self._sweep_id(connection, sweep)
            trials = connection.execute(
                select(*trial_columns).where(Trial.sweep_id == sweep_id).order_by(Trial.id)
            ).all()
            summaries = connection.execute(
                select(TrialSummary.trial_id, TrialSummary.metric, *summary_columns)
                .join(Trial, Trial.id == TrialSummary.trial_id)
                .where(Trial.sweep_id == sweep_id)
            ).all()
            return trials, summaries

        trials, summaries = self._read(run)
        # Plain tuples: pandas inspects Row objects one attribute at a time, ~10x slower on 10k trials.
        trials, summaries = [tuple(row) for row in trials], [tuple(row) for row in summaries]
        frame = pandas.DataFrame(
            trials, columns=["id", "status", *ALLOCATION_COLUMNS, "attempts", "error", "node", "device", "started_at", "ended_at"]
        )
        if not summaries:
            return frame
        long = pandas.DataFrame(summaries, columns=["id", "metric", *SUMMARY_STATS])
        long = long.astype({"last_step": "Int64", "best_step": "Int64"})
        wide = long.pivot(index="id", columns="metric", values=list(SUMMARY_STATS))
        metrics = sorted(long["metric"].unique())
        wide = wide[[(stat, metric) for metric in metrics for stat in SUMMARY_STATS]]
        wide.columns = [f"{metric}.{stat}" for stat, metric in wide.columns]
        return frame.merge(wide, how="left", left_on="id", right_index=True)

    # Events

    def record_event(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        sweep: str | None = None,
        trial_id: str | None = None,
    ) -> int:
        """Append one event to the feed; returns its id."""

        def record(connection: Connection) -> int:
            sweep_id = None if sweep is None else self._sweep_id(connection, sweep)
            event = {"kind": kind, "sweep_id": sweep_id, "trial_id": trial_id, "payload": dict(payload or {})}
            return writes.append_events(connection, [event])[0]

        return self._write(record)

    def events_since(self, after_id: int = 0, *, sweep: str | None = None, limit: int = 1000) -> list[EventInfo]:
        """Events with id > after_id, oldest first."""

        def run(connection: Connection) -> list[EventInfo]:
            statement = (
                select(Event.__table__, Sweep.name.label("sweep_name"))
                .outerjoin(Sweep, Sweep.id == Event.sweep_id)
                .where(Event.id > after_id)
                .order_by(Event.id)
                .limit(limit)
            )
            if sweep is not None:
                statement = statement.where(Event.sweep_id == self._sweep_id(connection, sweep))
            return [
                EventInfo(row.id, utc(row.created_at), row.kind, row.sweep_name, row.trial_id, row.payload)
                for row in connection.execute(statement)
            ]

        return self._read(run)

    # API tokens

    def create_token(self, name: str) -> str:
        """Create a bearer token; the plaintext is returned once and only its sha256 is stored."""
        token = "elm_" + secrets.token_urlsafe(32)

        def create(connection: Connection) -> None:
            inserted = connection.execute(
                writes.dialect_insert(connection, ApiToken)
                .values(name=name, token_sha256=token_hash(token), created_at=writes.now())
                .on_conflict_do_nothing(index_elements=[ApiToken.name])
                .returning(ApiToken.id)
            ).scalar()
            if inserted is None:
                raise ConflictError(f"token name {name!r} is already taken")

        self._write(create)
        return token

    def verify_token(self, token: str) -> str | None:
        """The name of the token if it exists and is not revoked, else None."""
        return self._read(
            lambda connection: connection.execute(
                select(ApiToken.name).where(ApiToken.token_sha256 == token_hash(token), ApiToken.revoked_at.is_(None))
            ).scalar()
        )

    def revoke_token(self, name: str) -> bool:
        """Revoke a token by name; returns False when it was already revoked."""

        def revoke(connection: Connection) -> bool:
            if connection.execute(select(ApiToken.id).where(ApiToken.name == name)).scalar() is None:
                raise NotFound(f"token {name!r} does not exist")
            return bool(
                connection.execute(
                    update(ApiToken)
                    .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=writes.now())
                ).rowcount
            )

        return self._write(revoke)

    def list_tokens(self) -> list[TokenInfo]:
        rows = self._read(
            lambda connection: connection.execute(select(ApiToken.__table__).order_by(ApiToken.name)).all()
        )
        return [TokenInfo(row.name, utc(row.created_at), utc(row.revoked_at)) for row in rows]
