"""One driver per sweep: `submit`, `resume` and `retry-failed` hold the sweep's lease while they run.

A background thread heartbeats it, so a driver that dies on another host frees it after resultsdb's expiry; on
this host a lease whose process is gone is free at once (see ResultsStore.acquire_lease).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from resultsdb import DatabaseUnavailable, DriverLease, ResultsStore

HEARTBEAT_SECONDS = 5.0


@contextmanager
def driver_lease(store: ResultsStore, sweep: str, *, force: bool = False) -> Iterator[None]:
    """Hold the sweep's lease while the block runs, released however it ends; SweepLeaseHeld when another driver
    holds it (`force` takes it over)."""
    lease = store.acquire_lease(sweep, force=force)
    stop = threading.Event()
    heartbeat = threading.Thread(target=_beat, args=(store, lease, stop), name="elmscale-lease", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        # Out of reach: the lease stays, and the next driver on this host takes it over (this process is gone).
        with contextlib.suppress(DatabaseUnavailable):
            store.release_lease(lease)


def _beat(store: ResultsStore, lease: DriverLease, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            if not store.heartbeat_lease(lease):
                return  # taken over with --force
        except DatabaseUnavailable:
            continue  # an outage: the next beat tries again
