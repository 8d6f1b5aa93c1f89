"""How no result gets lost: an append-only outbox file in front of the database.

The Tune callback only enqueues. A background thread appends every record to the outbox (fsync'd) before it
tries the database; delivered records are marked by a byte offset. While the database is down, records pile
up in the outbox and go out when it returns, or on the next `resume`. Writes are idempotent upserts, so a
record delivered twice (crash between delivery and marking) changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from pathlib import Path

from resultsdb import ResultsStore, TrialStatus

RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class OutboxUnwritable(RuntimeError):
    """The outbox file could not be written (full disk, removed directory, ...): results would be lost."""

FLUSH_SECONDS = 1.0  # at most one database transaction a second while the database is up


class Outbox:
    """Records as JSON lines in `<dir>/<sweep>.jsonl`; `<sweep>.offset` holds how far they were delivered.

    Lines that are not whole records (a write cut short by a kill, a full disk, power loss) are moved to
    `<sweep>.torn`, kept for inspection: left in place, the next append would glue a record onto them.
    """

    def __init__(self, directory: Path, sweep: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{sweep}.jsonl"
        self.offset_path = directory / f"{sweep}.offset"
        self.torn_path = directory / f"{sweep}.torn"
        self._kept_offsets: set[int] = set()
        self.path.touch()
        self._set_aside_torn_tail()

    def _set_aside_torn_tail(self) -> None:
        """Cut a last line that has no newline (only the writer that died could have finished it)."""
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end == size:
                return
            f.seek(end)
            self._keep_torn(f.read())
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())

    def _keep_torn(self, data: bytes) -> None:
        with open(self.torn_path, "ab") as f:
            f.write(data.rstrip(b"\n") + b"\n")

    def append(self, records: list[dict]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def delivered_offset(self) -> int:
        try:
            return int(self.offset_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def pending(self) -> tuple[list[dict], int]:
        """Undelivered complete records and the offset just after them (a torn last line is left for later)."""
        start = self.delivered_offset()
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        records, offset = [], start
        for line in complete.splitlines(keepends=True):
            try:
                records.append(json.loads(line))
            except ValueError:  # not a whole record (bytes lost inside the file): kept aside once, skipped
                if offset not in self._kept_offsets and line.strip():
                    self._kept_offsets.add(offset)
                    self._keep_torn(line)
            offset += len(line)
        return records, offset

    def mark_delivered(self, offset: int) -> None:
        partial = self.offset_path.with_suffix(".partial")
        partial.write_text(str(offset))
        partial.replace(self.offset_path)


def deliver(store: ResultsStore, records: list[dict]) -> None:
    """Apply records in order: consecutive results go as one batch; status changes one by one."""
    batch: list[tuple] = []
    for record in records:
        if record["kind"] == "result":
            batch.append((record["trial_id"], record["step"], record["metrics"], record["time"]))
            continue
        if batch:
            store.write_results(batch)
            batch = []
        store.set_trial_status(
            record["trial_id"], record["status"], error=record.get("error"), node=record.get("node"),
            device=record.get("device"), final=record.get("final"), at=record["time"],
        )
    if batch:
        store.write_results(batch)


def result_record(trial_id: str, step: int, metrics: dict) -> dict:
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"kind": "result", "trial_id": trial_id, "step": int(step), "metrics": numeric, "time": time.time()}


def status_record(trial_id: str, status: TrialStatus, **details) -> dict:
    details = {k: v for k, v in details.items() if v is not None}
    return {"kind": "status", "trial_id": trial_id, "status": status, "time": time.time(), **details}


class ResultSink:
    """The background writer: queue -> outbox file -> database."""

    def __init__(self, store: ResultsStore, outbox: Outbox):
        self.store, self.outbox = store, outbox
        self.queue: queue.Queue[dict] = queue.Queue()
        self.last_error: Exception | None = None
        self.failure: OutboxUnwritable | None = None  # set once the outbox cannot be written: the driver must stop
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._failures = 0
        # Records put, and records known to be in the database (counted by the thread), for `settle`.
        self._delivery = threading.Condition()
        self._put = self._delivered = self._in_outbox = 0
        self._thread = threading.Thread(target=self._run, name="elmscale-result-sink", daemon=True)

    def start(self) -> ResultSink:
        self._thread.start()
        return self

    def put(self, record: dict) -> None:
        with self._delivery:
            self._put += 1
        self.queue.put(record)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until every record put so far is in the database, delivering now; False if not within `timeout`."""
        with self._delivery:
            wanted = self._put
        self._retry_at = 0.0
        with self._delivery:
            return self._delivery.wait_for(lambda: self._delivered >= wanted or self.failure is not None,
                                           timeout) and self.failure is None

    def _drain_to_outbox(self, timeout: float) -> None:
        records = []
        try:
            records.append(self.queue.get(timeout=timeout))
            while True:
                records.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        if records:
            try:
                self.outbox.append(records)
                self._in_outbox += len(records)
            except OSError as error:
                self.failure = OutboxUnwritable(f"results can no longer be written to {self.outbox.path} ({error}); "
                                                f"the sweep was stopped: free the space or fix the path, then "
                                                f"`orchestrator resume` reruns what was not recorded")
                raise self.failure from error

    def flush_outbox(self) -> bool:
        """Try to deliver everything pending; False if that failed (the records stay on disk for the next try)."""
        records, end = self.outbox.pending()
        if not records:
            return True
        try:
            deliver(self.store, records)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the records stay on disk for a retry
            self.last_error = error
            return False
        self.last_error = None
        self.outbox.mark_delivered(end)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain_to_outbox(timeout=0.25)
            except OutboxUnwritable:
                with self._delivery:
                    self._delivery.notify_all()  # a waiting `settle` learns of self.failure now
                return  # self.failure tells the driver
            if time.monotonic() < self._retry_at:
                continue
            if self.flush_outbox():
                with self._delivery:
                    self._delivered += self._in_outbox
                    self._in_outbox = 0
                    self._delivery.notify_all()
                self._failures = 0
                # Durable on disk already; fewer, larger transactions leave the driver's CPU to Ray.
                self._retry_at = time.monotonic() + FLUSH_SECONDS
            else:
                self._retry_at = time.monotonic() + RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
                self._failures += 1

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the thread, then make a last delivery attempt for up to `timeout` seconds; True if all delivered."""
        self._stop.set()
        self._thread.join()
        if self.failure is not None:
            with contextlib.suppress(OSError):
                self.flush_outbox()  # what reached the file still goes to the database
            raise self.failure
        self._drain_to_outbox(timeout=0)
        deadline = time.monotonic() + timeout
        while not self.flush_outbox():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True
