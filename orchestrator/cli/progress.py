"""A running sweep's progress: a live view on a terminal, plain log lines otherwise (a file, a pipe, nohup)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from resultsdb import FINISHED_TRIAL_STATUSES, TrialStatus

from ..plan import TrialPlan

if TYPE_CHECKING:  # the runner loads Ray: only the commands that run trials import it
    from ..runner import SweepProgress

PROGRESS_LINE_EVERY_S = 30.0  # a log's "k/n trials done" comes with a trial's end, at most this often (and the last)


@contextmanager
def sweep_progress(console: Console, name: str, trials: list[TrialPlan]) -> Iterator[Callable[[SweepProgress], object]]:
    """The `live` callback of `runner.run`, showing the sweep's progress while the block runs."""
    if not console.is_terminal:
        labels = {t.trial_id: _label(t) for t in trials}
        yield lambda progress: ProgressLog(console, name, labels, progress)
        return
    shown: dict = {}
    with Live(console=console, refresh_per_second=2, get_renderable=lambda: _live_view(shown.get("progress"))):
        yield lambda progress: shown.update(progress=progress)


def _live_view(progress: SweepProgress | None):
    if progress is None:
        return "planning..."
    counts = progress.counts()
    done = sum(counts[status] for status in FINISHED_TRIAL_STATUSES)
    bar = ProgressBar(total=progress.total, completed=done, width=40)
    line = (f"trials {done}/{progress.total}  running {counts[TrialStatus.RUNNING]}  "
            f"failed {counts[TrialStatus.FAILED]}  stopped early {counts[TrialStatus.STOPPED_EARLY]}")
    table = Table(title=f"best {progress.metric} so far", title_justify="left")
    table.add_column("budget", justify="right")
    table.add_column(progress.metric, justify="right")
    with progress.lock:
        for budget, value in sorted(progress.best_by_budget.items()):
            table.add_row(f"{budget:.3g}", f"{value:.4f}")
    return Group(bar, line, table)


class ProgressLog:
    """Follows a run from its start: one timestamped line per trial start and end (its metric, or its error) and,
    at intervals, k/n trials done with an ETA from this run's pace."""

    def __init__(self, console: Console, name: str, labels: dict[str, str], progress: SweepProgress):
        self.console, self.labels, self.progress = console, labels, progress
        self.started_at, self.done_before = time.monotonic(), self._done()
        self.last_progress_line = -math.inf
        self._print(f"{name}: running {progress.total - self.done_before} of {progress.total} trials")
        progress.on_change = self.trial_changed

    def trial_changed(self, trial_id: str, status: TrialStatus, value: float | None, error: str | None) -> None:
        label, metric = self.labels.get(trial_id, trial_id), self.progress.metric
        if status == TrialStatus.RUNNING:
            self._print(f"started {label}")
        elif status == TrialStatus.COMPLETED:
            self._print(f"finished {label}: " + (f"{metric} {value:.4f}" if value is not None else f"no {metric}"))
        elif status == TrialStatus.FAILED:
            self._print(f"failed {label}: {(error or 'no error text').splitlines()[0]}")
        elif status == TrialStatus.STOPPED_EARLY:
            self._print(f"stopped early {label} ({error or 'by the scheduler'})")
        else:
            self._print(f"{status} {label} ({error or 'to be retried or resumed'})")
        if status in FINISHED_TRIAL_STATUSES:
            self._progress_line()

    def _progress_line(self) -> None:
        now, done, total = time.monotonic(), self._done(), self.progress.total
        if done < total and now - self.last_progress_line < PROGRESS_LINE_EVERY_S:
            return
        self.last_progress_line = now
        pace = (now - self.started_at) / max(1, done - self.done_before)  # seconds per trial finished in this run
        eta = f", ETA {_duration(pace * (total - done))}" if done < total else ""
        self._print(f"{done}/{total} trials done{eta}")

    def _done(self) -> int:
        counts = self.progress.counts()
        return sum(counts[status] for status in FINISHED_TRIAL_STATUSES)

    def _print(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False, soft_wrap=True)


def _label(trial: TrialPlan) -> str:
    axes = ", ".join(f"{axis} {value}" for axis, value in trial.axes.items())
    return f"{trial.trial_id} (budget {trial.budget:.3g}, {axes}, seed {trial.seed})"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"
