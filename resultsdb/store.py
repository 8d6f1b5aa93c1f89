"""ResultsStore: the one interface to the results database (Optuna-storage style).

The orchestrator, API and CLI call only this class; no session or SQL lives outside resultsdb.
Each public method runs in one transaction: it opens it and calls named helpers that take the
connection and commit nothing (``_…_without_commit`` for writes). Writes retry deadlocks and
serialization failures (resultsdb.retry); an unreachable database raises ``DatabaseUnavailable``; a
name that does not exist raises ``NotFound`` (from ``queries.find_or_raise``, the one place that does).
Reads live in resultsdb.queries, batched result writes in resultsdb.writes.

    store = ResultsStore()            # URL from ELMSCALE_DATABASE_URL, else sqlite:///elmscale.db
    store = ResultsStore("postgresql+psycopg://user@host/db")   # or an Engine

Sweeps
    create_sweep(name, *, task, metric, mode, spec_text, metric_modes=None, code_version=None) -> SweepInfo
        Idempotent for the same spec text; ConflictError when the name exists with another spec.
        metric_modes: {metric: "min"|"max"} for reported metrics other than `metric`; a metric not
        listed keeps its best by the sweep's `mode`.
    find_sweep(name) -> SweepInfo (NotFound);  get_sweep(name) -> SweepInfo | None
    list_sweeps() -> list[SweepInfo]  (with trial counts by status)
    set_sweep_status(name, status) -> bool (changed)
    finish_sweep(name) -> SweepStatus: once no trial is pending or running, "completed" when any trial
        succeeded (completed or stopped early), "failed" when none did; unchanged while a trial is still to run.
    stop_sweep(name) -> SweepStatus: the status it had; "stopped" now unless it had finished (completed,
        failed, stopped), which it keeps.
Trials
    add_trials(sweep, trials) -> list[str]: each trial a mapping with `config`, `seed` and the
        allocation columns (budget may be None); ids are trial_id(sweep, config, seed); idempotent.
    find_trial(trial_id) -> TrialInfo (NotFound): columns, sweep, summaries of the sweep's metrics.
    set_trial_status(trial_id, status, *, error=None, node=None, device=None, final=None, at=None) -> bool
        "running" from another status counts an attempt; finished statuses set ended_at;
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
        sort="-bpc.best" (descending; NULLs last, ties by id). Pass page.next_cursor to continue;
        limit=None returns every row. InvalidQuery names an unknown field, sort or cursor; UnknownMetric
        (an InvalidQuery) a metric the sweep neither declares (metric, metric_modes) nor has a result of.
        An integer no column of its type can hold matches nothing.
    series(trial_id, metric, max_points=1000) -> list[SeriesPoint]  (downsampled, last point kept;
        NotFound, UnknownMetric)
    summary_frame(sweep) -> pandas.DataFrame: one row per trial, columns id, status, allocation
        columns, and "<metric>.<stat>" for every reported metric (see resultsdb.frames.summary_frame).
    metric_frame(sweep, metric=None) -> MetricFrame(trials, metric, mode): the summary frame with the
        metric's value per trial (final, else best) in METRIC_COLUMN; default metric: the sweep's
        (UnknownMetric for one that is not the sweep's).
Events (live feed)
    record_event(kind, payload=None, *, sweep=None, trial_id=None) -> int
    events_since(after_id=0, *, sweep=None, limit=1000) -> list[EventInfo]; ids grow in commit order.
    last_event_id(sweep=None) -> int (0 before the first event)
        Appended automatically: sweep_created, sweep_<status>, trials_added, trial_<status>, and per
        write transaction and sweep one "results" event: {"trials": {trial_id: {"step", "values"}}}.
API tokens
    create_token(name) -> str (shown once; only its sha256 is stored);  verify_token(token) -> str | None
    (the token's name while not revoked);  revoke_token(name) -> bool;  list_tokens() -> list[TokenInfo]
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, Row, Select, select, update

from resultsdb import frames, queries, writes
from resultsdb.engine import connect, make_engine
from resultsdb.errors import ConflictError, InvalidQuery, NotFound
from resultsdb.ids import trial_id as make_trial_id
from resultsdb.models import (
    ACTIVE_TRIAL_STATUSES,
    ALLOCATION_COLUMNS,
    FINISHED_SWEEP_STATUSES,
    FINISHED_TRIAL_STATUSES,
    SUCCESSFUL_TRIAL_STATUSES,
    ApiToken,
    MetricMode,
    Sweep,
    SweepStatus,
    Trial,
    TrialStatus,
)
from resultsdb.queries import DEFAULT_FIELDS, Condition, utc
from resultsdb.records import EventInfo, SeriesPoint, SweepInfo, TokenInfo, TrialInfo, TrialPage
from resultsdb.retry import in_write_transaction
from resultsdb.tokens import new_token, token_hash

if TYPE_CHECKING:
    import pandas

MAX_POINTS_PER_TRANSACTION = 5_000

Result = TypeVar("Result")
Member = TypeVar("Member", bound=enum.StrEnum)


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

    def _read(self, work: Callable[..., Result], *args: Any) -> Result:
        with connect(self.engine) as connection:
            return work(connection, *args)

    def _write(self, work: Callable[..., Result], *args: Any) -> Result:
        return in_write_transaction(self.engine, work, *args)

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
        modes = {other: _member(f"mode of {other}", m, MetricMode) for other, m in (metric_modes or {}).items()}
        modes[metric] = _member("mode", mode, MetricMode)
        sweep = {
            "name": name,
            "task": task,
            "metric": metric,
            "mode": modes[metric],
            "metric_modes": {other: str(m) for other, m in sorted(modes.items())},
            "spec_text": spec_text,
            "spec_hash": hashlib.sha256(spec_text.encode()).hexdigest(),
            "status": SweepStatus.PENDING,
            "code_version": code_version,
        }
        return self._write(_create_sweep_without_commit, sweep)

    def find_sweep(self, name: str) -> SweepInfo:
        """The sweep named `name`; NotFound when there is none."""
        return self._read(queries.find_sweep, name)

    def get_sweep(self, name: str) -> SweepInfo | None:
        """The sweep named `name`, or None."""
        sweeps = self._read(queries.sweep_infos, name)
        return sweeps[0] if sweeps else None

    def list_sweeps(self) -> list[SweepInfo]:
        return self._read(queries.sweep_infos, None)

    def set_sweep_status(self, name: str, status: SweepStatus | str) -> bool:
        """Set a sweep's status; finished statuses record the finish time. Returns whether it changed."""
        return self._write(_set_sweep_status_without_commit, name, _member("sweep status", status, SweepStatus))

    def finish_sweep(self, name: str) -> SweepStatus:
        """End a sweep none of whose trials is still to run: failed when none succeeded, else completed."""
        return self._write(_finish_sweep_without_commit, name)

    def stop_sweep(self, name: str) -> SweepStatus:
        """Mark a sweep stopped unless it has finished; returns the status it had."""
        return self._write(_stop_sweep_without_commit, name)

    # Trials

    def add_trials(self, sweep: str, trials: Iterable[Mapping[str, Any]]) -> list[str]:
        """Persist planned trials as pending; returns their ids in the given order (new or already present)."""
        rows = [_trial_row(sweep, index, trial) for index, trial in enumerate(trials)]
        self._write(_add_trials_without_commit, sweep, sorted(rows, key=lambda row: row["id"]))
        return [row["id"] for row in rows]

    def find_trial(self, trial_id: str) -> TrialInfo:
        """The trial with its sweep and the summaries of the metrics its sweep declares; NotFound when unknown."""
        return self._read(queries.find_trial, trial_id)

    def set_trial_status(
        self,
        trial_id: str,
        status: TrialStatus | str,
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
        status = _member("trial status", status, TrialStatus)
        if at is None:
            changed_at = writes.now()
        elif isinstance(at, datetime):
            changed_at = utc(at)
        else:
            changed_at = datetime.fromtimestamp(at, UTC)
        placement = {key: value for key, value in (("node", node), ("device", device)) if value is not None}
        return self._write(
            _set_trial_status_without_commit, trial_id, status, changed_at, error, placement, final or {}
        )

    # Results

    def write_results(self, batch: Iterable[tuple[str, int, Mapping[str, float | None], float]]) -> int:
        """Upsert (trial_id, step, {metric: value}, wall_time) items; returns how many stored points changed."""
        rows = writes.point_rows(batch)
        postgres = self.engine.dialect.name == "postgresql"
        points = writes.CopyBatch(rows) if postgres else writes.PointBatch.from_rows(rows)
        return sum(
            self._write(_write_points_without_commit, chunk, self._trial_contexts)
            for chunk in points.chunks(MAX_POINTS_PER_TRANSACTION)
        )

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
            raise InvalidQuery(f"limit {limit}: must be at least 1")
        field_list = list(dict.fromkeys(fields or DEFAULT_FIELDS))
        return self._read(queries.trial_page, sweep, where or {}, sort, field_list, limit, cursor)

    def series(self, trial_id: str, metric: str, max_points: int = 1000) -> list[SeriesPoint]:
        """A trial's points of one metric by step, thinned to at most `max_points` (the last kept)."""
        if max_points < 1:
            raise InvalidQuery(f"max_points {max_points}: must be at least 1")
        rows = self._read(queries.trial_series, trial_id, metric, max_points)
        return [SeriesPoint(row.step, row.value, row.wall_time) for row in rows]

    def summary_frame(self, sweep: str) -> pandas.DataFrame:
        """One row per trial: id, status, allocation columns, attempts, error, node, device, start/end times,
        then "<metric>.<stat>" columns."""
        info, trials, summaries = self._read(queries.summary_rows, sweep)
        return frames.summary_frame(trials, summaries, info.metric)

    def metric_frame(self, sweep: str, metric: str | None = None) -> frames.MetricFrame:
        """The summary frame with `metric` (default: the sweep's) per trial in METRIC_COLUMN, and its mode."""
        info, trials, summaries = self._read(queries.summary_rows, sweep, [metric] if metric else [])
        metric = metric or info.metric
        mode = MetricMode(info.metric_modes.get(metric, info.mode))
        return frames.metric_frame(frames.summary_frame(trials, summaries, info.metric), metric, mode)

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
        return self._write(_record_event_without_commit, kind, dict(payload or {}), sweep, trial_id)

    def events_since(self, after_id: int = 0, *, sweep: str | None = None, limit: int = 1000) -> list[EventInfo]:
        """Events with id > after_id, oldest first."""
        return self._read(queries.events_since, after_id, sweep, limit)

    def last_event_id(self, sweep: str | None = None) -> int:
        """The id of the newest event (of `sweep`); 0 when there is none."""
        return self._read(queries.last_event_id, sweep)

    # API tokens

    def create_token(self, name: str) -> str:
        """Create a bearer token; the plaintext is returned once and only its sha256 is stored."""
        token = new_token()
        self._write(_create_token_without_commit, name, token_hash(token))
        return token

    def verify_token(self, token: str) -> str | None:
        """The name of the token if it exists and is not revoked, else None."""
        active = select(ApiToken.name).where(ApiToken.revoked_at.is_(None))
        return self._read(_scalar, active.where(ApiToken.token_sha256 == token_hash(token)))

    def revoke_token(self, name: str) -> bool:
        """Revoke a token by name; returns False when it was already revoked."""
        return self._write(_revoke_token_without_commit, name)

    def list_tokens(self) -> list[TokenInfo]:
        rows = self._read(_rows, select(ApiToken.__table__).order_by(ApiToken.name))
        return [TokenInfo(row.name, utc(row.created_at), utc(row.revoked_at)) for row in rows]


# Checks of the caller's values


def _member(field: str, value: str, members: type[Member]) -> Member:
    try:
        return members(value)
    except ValueError:
        raise ValueError(f"{field} {value!r}: expected one of {', '.join(members)}") from None


def _trial_row(sweep: str, index: int, trial: Mapping[str, Any]) -> dict[str, Any]:
    required = ("config", "seed", *(column for column in ALLOCATION_COLUMNS if column != "budget"))
    missing = [field for field in required if field not in trial]
    if missing:
        raise ValueError(f"trial {index}: missing field {missing[0]!r}")
    return {
        **{column: trial.get(column) for column in ALLOCATION_COLUMNS},
        "id": make_trial_id(sweep, trial["config"], trial["seed"]),
        "config": trial["config"],
        "status": TrialStatus.PENDING,
        "attempts": 0,
    }


def _scalar(connection: Connection, statement: Select) -> Any:
    return connection.execute(statement).scalar()


def _rows(connection: Connection, statement: Select) -> Sequence[Row]:
    return connection.execute(statement).all()


# Writes: each runs inside the caller's transaction and commits nothing; events go last (see writes.append_events).


def _create_sweep_without_commit(connection: Connection, sweep: dict[str, Any]) -> SweepInfo:
    name = sweep["name"]
    inserted = connection.execute(
        writes.dialect_insert(connection, Sweep)
        .values(**sweep, created_at=writes.now())
        .on_conflict_do_nothing(index_elements=[Sweep.name])
        .returning(Sweep.id)
    ).scalar()
    info = queries.find_sweep(connection, name)
    if info.spec_hash != sweep["spec_hash"]:
        raise ConflictError(f"sweep {name!r} already exists with a different spec (hash {info.spec_hash[:12]})")
    if inserted is not None:
        writes.append_events(connection, [{"kind": "sweep_created", "sweep_id": inserted, "payload": {"name": name}}])
    return info


def _set_sweep_status_without_commit(connection: Connection, name: str, status: SweepStatus) -> bool:
    sweep_id = queries.sweep_id(connection, name)
    finished_at = writes.now() if status in FINISHED_SWEEP_STATUSES else None
    changed = connection.execute(
        update(Sweep).where(Sweep.id == sweep_id, Sweep.status != status).values(status=status, finished_at=finished_at)
    ).rowcount
    if changed:
        event = {"kind": f"sweep_{status}", "sweep_id": sweep_id, "payload": {"status": status}}
        writes.append_events(connection, [event])
    return bool(changed)


def _finish_sweep_without_commit(connection: Connection, name: str) -> SweepStatus:
    sweep = queries.find_sweep(connection, name)
    statuses = sweep.trial_counts.keys()
    if statuses & ACTIVE_TRIAL_STATUSES:
        return sweep.status
    ended = SweepStatus.FAILED if statuses and not statuses & SUCCESSFUL_TRIAL_STATUSES else SweepStatus.COMPLETED
    _set_sweep_status_without_commit(connection, name, ended)
    return ended


def _stop_sweep_without_commit(connection: Connection, name: str) -> SweepStatus:
    status = queries.find_or_raise(
        connection, select(Sweep.status).where(Sweep.name == name).with_for_update(), "sweep", name
    ).status
    if status not in FINISHED_SWEEP_STATUSES:
        _set_sweep_status_without_commit(connection, name, SweepStatus.STOPPED)
    return status


def _add_trials_without_commit(connection: Connection, sweep: str, rows: list[dict[str, Any]]) -> None:
    sweep_id = queries.sweep_id(connection, sweep)
    if not rows:
        return
    created_at = writes.now()
    inserted = connection.execute(
        writes.dialect_insert(connection, Trial).on_conflict_do_nothing(index_elements=[Trial.id]).returning(Trial.id),
        [{**row, "sweep_id": sweep_id, "created_at": created_at} for row in rows],
    ).all()
    if inserted:
        event = {"kind": "trials_added", "sweep_id": sweep_id, "payload": {"count": len(inserted)}}
        writes.append_events(connection, [event])


def _set_trial_status_without_commit(
    connection: Connection,
    trial_id: str,
    status: TrialStatus,
    changed_at: datetime,
    error: str | None,
    placement: dict[str, str],
    final: Mapping[str, float],
) -> bool:
    current = queries.find_or_raise(
        connection,
        select(Trial.sweep_id, Trial.status, Trial.attempts, Trial.status_at)
        .where(Trial.id == trial_id)
        .with_for_update(key_share=True),
        "trial",
        trial_id,
    )
    if final:
        writes.set_final_values(connection, trial_id, final)
    stale = current.status_at is not None and changed_at < utc(current.status_at)
    if current.status == status and not stale and placement:
        # Where a trial runs is known only after it started: record it without a status change.
        connection.execute(update(Trial).where(Trial.id == trial_id).values(**placement))
    if current.status == status or stale:
        return False
    values: dict[str, Any] = {"status": status, "status_at": changed_at, **placement}
    if status == TrialStatus.RUNNING:
        values.update(attempts=current.attempts + 1, started_at=changed_at, ended_at=None, error=None)
    elif status in FINISHED_TRIAL_STATUSES:
        values.update(ended_at=changed_at, error=error)
    connection.execute(update(Trial).where(Trial.id == trial_id).values(**values))
    payload: dict[str, Any] = {"status": status, "attempts": values.get("attempts", current.attempts)}
    if error is not None:
        payload["error"] = error
    event = {"kind": f"trial_{status}", "sweep_id": current.sweep_id, "trial_id": trial_id, "payload": payload}
    writes.append_events(connection, [event])
    return True


def _write_points_without_commit(
    connection: Connection,
    points: writes.PointBatch | writes.CopyBatch,
    contexts: dict[str, writes.TrialContext],
) -> int:
    """Write one chunk of points; `contexts` caches each trial's sweep and modes across chunks."""
    unknown = points.trial_ids - contexts.keys()
    if unknown:
        contexts.update(writes.trial_contexts(connection, unknown))
        missing = sorted(unknown - contexts.keys())
        if missing:
            raise NotFound("trial", missing[0], hint="add it with add_trials first")
    changed, changes = points.write(connection, contexts)
    writes.append_events(connection, writes.result_events(changes, contexts))
    return changed


def _record_event_without_commit(
    connection: Connection, kind: str, payload: dict[str, Any], sweep: str | None, trial_id: str | None
) -> int:
    sweep_id = None if sweep is None else queries.sweep_id(connection, sweep)
    event = {"kind": kind, "sweep_id": sweep_id, "trial_id": trial_id, "payload": payload}
    return writes.append_events(connection, [event])[0]


def _create_token_without_commit(connection: Connection, name: str, digest: str) -> None:
    inserted = connection.execute(
        writes.dialect_insert(connection, ApiToken)
        .values(name=name, token_sha256=digest, created_at=writes.now())
        .on_conflict_do_nothing(index_elements=[ApiToken.name])
        .returning(ApiToken.id)
    ).scalar()
    if inserted is None:
        raise ConflictError(f"token name {name!r} is already taken")


def _revoke_token_without_commit(connection: Connection, name: str) -> bool:
    queries.find_or_raise(connection, select(ApiToken.id).where(ApiToken.name == name), "token", name)
    revoked = connection.execute(
        update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)).values(revoked_at=writes.now())
    )
    return bool(revoked.rowcount)
