"""ResultsStore: the one interface to the results database (Optuna-storage style).

The orchestrator, API and CLI call only this class; no session or SQL lives outside resultsdb.
Each public method runs in one transaction: it opens it and calls named helpers that take the
connection and commit nothing (``_…_without_commit`` for writes). Writes retry deadlocks and
serialization failures (resultsdb.retry); an unreachable database raises ``DatabaseUnavailable``; a
name that does not exist raises ``NotFound`` (from ``queries.find_or_raise``, the one place that does).
Reads live in resultsdb.queries, batched result writes in resultsdb.writes.

    store = ResultsStore()            # URL from ELMSCALE_DATABASE_URL, else sqlite:///elmscale.db
    store = ResultsStore("postgresql+psycopg://user@host/db")   # or an Engine
    store = ResultsStore(url, read_timeout_s=10)   # Postgres cancels a read running longer: DatabaseUnavailable

A pool whose connections all stay busy raises DatabaseUnavailable too; pool_exhausted(for_s) says whether it is so
now (and stays so for for_s seconds).

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
    ingest_trials(sweep, trials, *, writer, overwrite=False, declared=None, metric_modes=None) -> IngestedTrials
        Finished trials computed elsewhere (add_trials' fields plus `status` and `final`), all in one
        transaction with one "trials_ingested" event {token, trials, added, overwritten}; `declared`
        (task, metric, mode) creates the sweep. Changing a trial of an orchestrated sweep (not ingested)
        raises OverwriteRefused unless `overwrite`.
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
        Appended automatically: sweep_created, sweep_<status>, trials_added, trial_<status>, trials_ingested,
        prediction_recorded, and per write transaction and sweep one "results" event: {"trials": {trial_id: {"step",
        "values"}}}.
Driver leases (one driver per sweep)
    acquire_lease(sweep, *, force=False, host=None, pid=None, expiry_s=LEASE_EXPIRY_S) -> DriverLease
        For this process (or the host and pid given), atomically: SweepLeaseHeld (naming holder, host, pid, since)
        while another holder's heartbeat is younger than expiry_s seconds and, on this host, its process is alive.
    heartbeat_lease(lease) -> bool;  release_lease(lease) -> bool: False when the lease is no longer held by
        `lease` (taken over, released).
Predictions (see resultsdb.predictions for what makes two sweeps one experiment)
    create_prediction(sweep, prediction, *, metric=None) -> (PredictionInfo, created): what a law predicted from the
        sweep's trials; the same prediction from the same data snapshot is the existing row (created False).
    list_predictions(sweep=None) -> list[PredictionInfo]: oldest first; with `sweep`, those made from it or scored
        against its trials.
    score_predictions(scorer, sweep=None) -> list_predictions(sweep) after scoring every prediction (of `sweep`'s
        experiment) whose budget has finished trials that changed since it was last scored.
API tokens
    create_token(name) -> str (shown once; only its sha256 is stored);  verify_token(token) -> str | None
    (the token's name while not revoked);  revoke_token(name) -> bool;  list_tokens() -> list[TokenInfo]
"""

from __future__ import annotations

import enum
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, Row, Select, bindparam, delete, insert, select, update

from resultsdb import frames, predictions, queries, writes
from resultsdb.engine import connect, make_engine, pool_exhausted
from resultsdb.errors import ConflictError, InvalidQuery, NotFound, OverwriteRefused, SweepLeaseHeld
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
    SweepLease,
    SweepStatus,
    Trial,
    TrialStatus,
    TrialSummary,
)
from resultsdb.queries import DEFAULT_FIELDS, Condition, utc
from resultsdb.records import (
    DriverLease,
    EventInfo,
    IngestedTrials,
    PredictionInfo,
    SeriesPoint,
    SweepInfo,
    TokenInfo,
    TrialInfo,
    TrialPage,
    ingested_spec_text,
)
from resultsdb.retry import in_write_transaction
from resultsdb.tokens import new_token, token_hash

if TYPE_CHECKING:
    import pandas

MAX_POINTS_PER_TRANSACTION = 5_000
MAX_IDS_PER_STATEMENT = 1_000
# A lease whose heartbeat is older than this is free: its driver died on another host (drivers beat every 5 s).
LEASE_EXPIRY_S = 30.0
POOL_POLL_S = 0.05

Result = TypeVar("Result")
Member = TypeVar("Member", bound=enum.StrEnum)


class ResultsStore:
    """Sweeps, trials, results, events and API tokens in one database (see the module docstring)."""

    def __init__(self, url_or_engine: str | Engine | None = None, *, read_timeout_s: float | None = None) -> None:
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self.read_timeout_s = read_timeout_s
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

    def pool_exhausted(self, for_s: float = 0.0) -> bool:
        """Whether every connection of the store's pool is in use, and stays so for `for_s` seconds: the next read
        or write waits for one (a pool that is full for an instant under load frees a connection within ms)."""
        deadline = time.monotonic() + for_s
        while pool_exhausted(self.engine):
            if time.monotonic() >= deadline:
                return True
            time.sleep(POOL_POLL_S)
        return False

    def _read(self, work: Callable[..., Result], *args: Any) -> Result:
        with connect(self.engine, statement_timeout_s=self.read_timeout_s) as connection:
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
        sweep = _sweep_row(name, task, metric, mode, spec_text, metric_modes or {}, code_version)
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

    def ingest_trials(
        self,
        sweep: str,
        trials: Sequence[Mapping[str, Any]],
        *,
        writer: str,
        overwrite: bool = False,
        declared: Mapping[str, str] | None = None,
        metric_modes: Mapping[str, str] | None = None,
    ) -> IngestedTrials:
        """Store finished trials computed elsewhere in one transaction, with one "trials_ingested" event.

        Each trial: what add_trials takes, plus `status` (a finished status) and `final` ({metric: test value}).
        `declared` ({task, metric, mode}) creates the sweep when it does not exist, its spec text saying so.
        Two trials with one id are a ValueError. A trial of an orchestrated sweep whose status or final values
        would change raises OverwriteRefused unless `overwrite`; the event names `writer` and the trials changed.
        """
        rows = [_trial_row(sweep, index, trial) for index, trial in enumerate(trials)]
        first_index: dict[str, int] = {}
        for index, row in enumerate(rows):
            if (first := first_index.setdefault(row["id"], index)) != index:
                raise ValueError(f"trials {first} and {index} have the same config and seed (trial {row['id']})")
        for row, trial in zip(rows, trials, strict=True):
            row["status"] = _member("trial status", trial["status"], TrialStatus)
            if row["status"] not in FINISHED_TRIAL_STATUSES:
                raise ValueError(f"trial {row['id']}: status {row['status']!r} is not a finished status")
        finals = {row["id"]: dict(trial.get("final") or {}) for row, trial in zip(rows, trials, strict=True)}
        new_sweep = None
        if declared is not None:
            spec_text = ingested_spec_text(sweep, declared, metric_modes or {})
            new_sweep = _sweep_row(sweep, declared["task"], declared["metric"], declared["mode"], spec_text,
                                   metric_modes or {}, None)
        return self._write(_ingest_without_commit, sweep, rows, finals, new_sweep, writer, overwrite)

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

    def events_since(self, after_id: int = 0, *, sweep: str | None = None, limit: int = 1000,
                     kind: str | None = None) -> list[EventInfo]:
        """Events with id > after_id (of `kind` only, if given), oldest first."""
        return self._read(queries.events_since, after_id, sweep, limit, kind)

    def last_event_id(self, sweep: str | None = None) -> int:
        """The id of the newest event (of `sweep`); 0 when there is none."""
        return self._read(queries.last_event_id, sweep)

    # Driver leases

    def acquire_lease(
        self,
        sweep: str,
        *,
        force: bool = False,
        host: str | None = None,
        pid: int | None = None,
        expiry_s: float = LEASE_EXPIRY_S,
    ) -> DriverLease:
        """Take the sweep's driver lease for the process `pid` on `host` (default: this one).

        The lease is free when nobody holds it, when its holder ran on this host and that process is gone, when
        the holder's heartbeat is older than `expiry_s` seconds, or with `force`; else SweepLeaseHeld.
        """
        holder = secrets.token_hex(16)
        lease = DriverLease(sweep, holder, host or socket.gethostname(), pid or os.getpid(), writes.now())
        return self._write(_acquire_lease_without_commit, lease, force, timedelta(seconds=expiry_s))

    def heartbeat_lease(self, lease: DriverLease) -> bool:
        """Record that the lease's holder is alive; False when the lease is no longer its (taken over, released)."""
        held = _held_by(lease)
        return self._write(_changed_rows, update(SweepLease).where(held).values(heartbeat_at=writes.now())) > 0

    def release_lease(self, lease: DriverLease) -> bool:
        """Give the lease back; False when it was no longer held by `lease` (a takeover is left alone)."""
        return self._write(_changed_rows, delete(SweepLease).where(_held_by(lease))) > 0

    # Predictions

    def create_prediction(
        self, sweep: str, prediction: Mapping[str, Any], *, metric: str | None = None
    ) -> tuple[PredictionInfo, bool]:
        """Record what a law predicted from the sweep's trials of `metric` (default: the sweep's); returns the
        prediction and whether it is new.

        `prediction` holds budget, law, n_bootstrap, d_m, n_hidden, k_e and metric (each {value, ci_low, ci_high},
        finite), snapshot_hash, n_trials and budgets (those fitted on), as analysis.predictions.BudgetPrediction's
        to_dict() gives them; ValueError names what is missing. The same prediction (sweep, metric, budget, law,
        n_bootstrap) from the same snapshot is the row already recorded; a new one appends a "prediction_recorded"
        event.
        """
        row = predictions.prediction_row(prediction)
        return self._write(predictions.insert_without_commit, sweep, metric, row)

    def list_predictions(self, sweep: str | None = None) -> list[PredictionInfo]:
        """Every prediction, oldest first; with `sweep`, those made from it or scored against its trials."""
        return self._read(predictions.prediction_infos, sweep)

    def score_predictions(self, scorer: predictions.Scorer, sweep: str | None = None) -> list[PredictionInfo]:
        """Score the predictions whose trials changed, then list_predictions(sweep).

        A prediction is scored against the trials at its budget, succeeded and with its metric, of every sweep of
        its task and experiment (its own sweep too: it was fitted on lower budgets only), once none of those sweeps
        has a trial at that budget still to run. `scorer(mode, predicted d_m, predicted metric, trials)` gives the
        score (d_m_inside, metric_inside, metric_error, regret and the JSON `observed`), or None when the trials
        cannot score it (too few allocations). The score is recorded with a hash of the (trial id, value) pairs, so
        scoring the same trials again changes nothing, and more trials replace it. With `sweep`, only the
        predictions of its task and experiment are scored.

        Scoring is lazy, done when predictions are listed (the CLI and the API list through this): a score is as
        current as the trials whenever anyone looks, with no hook in the drivers and ingests that finish trials.
        """
        due = self._read(predictions.prediction_infos, None)
        if sweep is not None:
            info = self.find_sweep(sweep)
            experiment = predictions.experiment_of(info.name, info.spec_text)
            due = [p for p in due if p.task == info.task and p.experiment == experiment]
        sweeps = predictions.experiments_of(self.list_sweeps())
        metric_trials = predictions.MetricTrials(self.metric_frame)
        for prediction in due:
            seen = predictions.observation(prediction, sweeps, metric_trials)
            if seen is None or (prediction.score is not None and prediction.score.observed_hash == seen.hash):
                continue
            score = scorer(prediction.mode, prediction.predicted.d_m, prediction.predicted.metric, seen.trials)
            if score is not None:
                self._write(predictions.score_without_commit, prediction.id, seen, score)
        return self.list_predictions(sweep)

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


def _sweep_row(
    name: str, task: str, metric: str, mode: str, spec_text: str, metric_modes: Mapping[str, str],
    code_version: str | None,
) -> dict[str, Any]:
    modes = {other: _member(f"mode of {other}", m, MetricMode) for other, m in metric_modes.items()}
    modes[metric] = _member("mode", mode, MetricMode)
    return {
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


def _changed_rows(connection: Connection, statement: Any) -> int:
    return connection.execute(statement).rowcount


def _held_by(lease: DriverLease) -> Any:
    sweep_id = select(Sweep.id).where(Sweep.name == lease.sweep).scalar_subquery()
    return (SweepLease.sweep_id == sweep_id) & (SweepLease.holder == lease.holder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Writes: each runs inside the caller's transaction and commits nothing; events go last (see writes.append_events).


def _create_sweep_without_commit(connection: Connection, sweep: dict[str, Any]) -> SweepInfo:
    info, created = _insert_sweep_without_commit(connection, sweep)
    if created:
        writes.append_events(connection, [_sweep_created_event(info)])
    return info


def _sweep_created_event(info: SweepInfo) -> dict[str, Any]:
    return {"kind": "sweep_created", "sweep_id": info.id, "payload": {"name": info.name}}


def _insert_sweep_without_commit(connection: Connection, sweep: dict[str, Any]) -> tuple[SweepInfo, bool]:
    """The sweep (inserted unless one of that name exists with the same spec) and whether it was inserted."""
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
    return info, inserted is not None


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


def _ingest_without_commit(
    connection: Connection,
    name: str,
    rows: list[dict[str, Any]],
    finals: dict[str, dict[str, float]],
    new_sweep: dict[str, Any] | None,
    writer: str,
    overwrite: bool,
) -> IngestedTrials:
    events = []
    created = False
    if new_sweep is not None:
        info, created = _insert_sweep_without_commit(connection, new_sweep)
        if created:
            events.append(_sweep_created_event(info))
    # Concurrent ingests of one sweep wait for each other, so each sees what it would overwrite.
    queries.find_or_raise(
        connection, select(Sweep.id).where(Sweep.name == name).with_for_update(key_share=True), "sweep", name
    )
    sweep = queries.find_sweep(connection, name)
    stored_statuses, stored_finals = _stored_trials(connection, sweep.id, [row["id"] for row in rows])
    changed = []
    for row in rows:
        trial_id = row["id"]
        if trial_id not in stored_statuses:
            continue
        change = _ingest_change(stored_statuses[trial_id], stored_finals.get(trial_id, {}), row["status"],
                                finals[trial_id])
        if change is None:
            continue
        if not (overwrite or sweep.ingested):
            raise OverwriteRefused(name, trial_id, change)
        changed.append(trial_id)
    ingested_at = writes.now()
    ended = {"status_at": ingested_at, "ended_at": ingested_at, "error": None}
    new_rows = [
        {**row, **ended, "sweep_id": sweep.id, "created_at": ingested_at}
        for row in rows if row["id"] not in stored_statuses
    ]
    if new_rows:
        inserted = writes.dialect_insert(connection, Trial).on_conflict_do_nothing(index_elements=[Trial.id])
        connection.execute(inserted, new_rows)
    changed_ids = set(changed)
    restatused = [
        {"trial": row["id"], "new_status": row["status"]}
        for row in rows
        if row["id"] in changed_ids and stored_statuses[row["id"]] != row["status"]
    ]
    if restatused:
        connection.execute(
            update(Trial).where(Trial.id == bindparam("trial")).values(status=bindparam("new_status"), **ended),
            restatused,
        )
    written = {row["id"] for row in new_rows} | changed_ids
    writes.set_final_values(connection, {trial_id: finals[trial_id] for trial_id in sorted(written)})
    payload = {"token": writer, "trials": len(rows), "added": len(new_rows), "overwritten": changed}
    events.append({"kind": "trials_ingested", "sweep_id": sweep.id, "payload": payload})
    writes.append_events(connection, events)
    _finish_sweep_without_commit(connection, name)
    return IngestedTrials(created_sweep=created, trial_ids=[row["id"] for row in rows], overwritten=changed)


def _stored_trials(
    connection: Connection, sweep_id: int, trial_ids: list[str]
) -> tuple[dict[str, TrialStatus], dict[str, dict[str, float | None]]]:
    """Status and final values of those of `trial_ids` that the sweep has."""
    statuses: dict[str, TrialStatus] = {}
    finals: dict[str, dict[str, float | None]] = {}
    ids = sorted(trial_ids)
    for start in range(0, len(ids), MAX_IDS_PER_STATEMENT):
        chunk = ids[start : start + MAX_IDS_PER_STATEMENT]
        trials = select(Trial.id, Trial.status).where(Trial.sweep_id == sweep_id, Trial.id.in_(chunk))
        statuses.update({row.id: row.status for row in connection.execute(trials)})
        summaries = select(TrialSummary.trial_id, TrialSummary.metric, TrialSummary.final_value).where(
            TrialSummary.trial_id.in_(chunk)
        )
        for row in connection.execute(summaries):
            finals.setdefault(row.trial_id, {})[row.metric] = row.final_value
    return statuses, finals


def _ingest_change(
    stored_status: TrialStatus, stored_final: Mapping[str, float | None], status: TrialStatus,
    final: Mapping[str, float],
) -> str | None:
    """What an ingested row would change of a stored trial, in words; None when nothing."""
    if stored_status != status:
        return f"status {stored_status} -> {status}"
    for metric, value in sorted(final.items()):
        if stored_final.get(metric) != writes.storable(value):
            return f"{metric}.final {stored_final.get(metric)} -> {value}"
    return None


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
        writes.set_final_values(connection, {trial_id: final})
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


def _acquire_lease_without_commit(
    connection: Connection, lease: DriverLease, force: bool, expiry: timedelta
) -> DriverLease:
    # Locking the sweep row makes acquirers of one sweep take turns (SQLite's write transactions always do).
    sweep_id = queries.find_or_raise(
        connection, select(Sweep.id).where(Sweep.name == lease.sweep).with_for_update(key_share=True),
        "sweep", lease.sweep,
    ).id
    held = connection.execute(select(SweepLease.__table__).where(SweepLease.sweep_id == sweep_id)).one_or_none()
    row = {"holder": lease.holder, "host": lease.host, "pid": lease.pid, "acquired_at": lease.acquired_at,
           "heartbeat_at": lease.acquired_at}
    if held is None:
        connection.execute(insert(SweepLease).values(sweep_id=sweep_id, **row))
        return lease
    # A heartbeat stops when its driver died anywhere; on this host a gone process says so at once.
    abandoned = utc(held.heartbeat_at) < lease.acquired_at - expiry or (
        held.host == socket.gethostname() and not _process_alive(held.pid)
    )
    if not (abandoned or force):
        raise SweepLeaseHeld(lease.sweep, held.host, held.pid, utc(held.acquired_at))
    connection.execute(update(SweepLease).where(SweepLease.sweep_id == sweep_id).values(**row))
    return lease


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
