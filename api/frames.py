"""Metric frames of sweeps, and analyses of them, kept between requests until the sweep's event feed moves on.

Every change to a sweep's trials or results appends an event (resultsdb's contract), so a frame
built after event E is current while the sweep's newest event is E: one indexed read (max id) per
request instead of reloading every trial's summary and recomputing the analysis.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from resultsdb import MetricFrame, ResultsStore

Derived = TypeVar("Derived")


@dataclass
class _Entry:
    built_after_event: int
    frame: MetricFrame
    derived: dict[Hashable, Any] = field(default_factory=dict)


class SweepFrames:
    """ResultsStore.metric_frame per (sweep, metric), cached (LRU) and checked against the feed."""

    def __init__(self, store: ResultsStore, capacity: int = 32) -> None:
        self._store = store
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def metric_frame(self, sweep: str, metric: str | None = None) -> MetricFrame:
        """Like ResultsStore.metric_frame; the returned frame is shared, so callers must not modify it."""
        return self._current(sweep, metric).frame

    def derived(
        self, sweep: str, metric: str | None, name: Hashable, compute: Callable[[MetricFrame], Derived]
    ) -> Derived:
        """compute(metric frame), kept with the frame until the sweep changes; `name` tells analyses apart.

        Only for results that are a function of the frame alone; an exception is raised, not kept.
        """
        entry = self._current(sweep, metric)
        with self._lock:
            if name in entry.derived:
                return entry.derived[name]
        value = compute(entry.frame)
        with self._lock:
            entry.derived[name] = value
        return value

    def _current(self, sweep: str, metric: str | None) -> _Entry:
        key = (sweep, metric)
        # The mark is taken before the read: a write that lands in between makes the next request rebuild.
        mark = self._store.last_event_id(sweep)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.built_after_event == mark:
                self._entries.move_to_end(key)
                return entry
        entry = _Entry(mark, self._store.metric_frame(sweep, metric))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return entry
