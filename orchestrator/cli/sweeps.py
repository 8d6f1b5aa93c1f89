"""Commands that plan, run and inspect sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from resultsdb import FINISHED_TRIAL_STATUSES, ResultsStore, SweepStatus, TrialStatus

from ..plan import plan as expand
from ..spec import SweepSpec, load_spec
from .analysis import print_frontier
from .common import AddressOption, DbOption, UserError, console, errors, open_store, spec_of, user_errors

app = typer.Typer()  # its commands join the main app (orchestrator.cli)

SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec (YAML).")]


@app.command()
def plan(spec_path: SpecArgument) -> None:
    """Print the expanded trial table of a sweep spec without running anything."""
    with user_errors():
        spec, _ = load_spec(spec_path)
        trials = expand(spec)
    table = Table(title=f"{spec.name}: {len(trials)} trials", show_lines=False)
    for column in ("budget", *trials[0].axes, "N", "d_m", "k_e", "k_c", "P", "shortfall", "seed"):
        table.add_column(column, justify="right")
    for t in trials:
        table.add_row(
            f"{t.budget:.3g}", *(str(v) for v in t.axes.values()), str(t.model.n_hidden), str(t.model.d_m),
            f"{t.params.k_e:,}", f"{t.params.k_c:,}", f"{t.params.params_total:,}", f"{t.shortfall:+.2%}", str(t.seed),
        )
    console.print(table)


@app.command()
def submit(spec_path: SpecArgument, db: DbOption = None, address: AddressOption = None) -> None:
    """Record a sweep and all its trials, then run them on Ray Tune (resubmitting the same spec resumes it)."""
    with user_errors():
        spec, text = load_spec(spec_path)
        expand(spec)  # every spec problem surfaces before the database is touched
        store = open_store(db)
        _execute(spec, text, store, address, only=None)


@app.command()
def resume(name: str, db: DbOption = None, address: AddressOption = None) -> None:
    """Run what is unfinished of a sweep (after a killed driver, a reboot, a database outage)."""
    with user_errors():
        store = open_store(db)
        spec, text = spec_of(store, name)
        _execute(spec, text, store, address, only=None)


@app.command("retry-failed")
def retry_failed(name: str, db: DbOption = None, address: AddressOption = None) -> None:
    """Run the failed trials of a sweep again (they resume from their last checkpoint)."""
    from .. import runner  # Ray loads here and in _execute: the other commands start without it.

    with user_errors():
        store = open_store(db)
        spec, text = spec_of(store, name)
        failed = [tid for tid, status in runner.trial_statuses(store, name).items() if status == TrialStatus.FAILED]
        if not failed:
            console.print(f"{name}: no failed trials")
            return
        _execute(spec, text, store, address, only=failed)


def _execute(spec: SweepSpec, text: str, store: ResultsStore, address: str | None, only: list[str] | None) -> None:
    from .. import runner

    trials = runner.prepare(spec, text, store)
    holder: dict = {}
    with Live(console=console, refresh_per_second=2, get_renderable=lambda: _progress_view(holder)) as _:
        outcome = runner.run(spec, trials, store, address=address, only=only, live=lambda p: holder.update(p=p))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.statuses.items()))
    console.print(f"[bold]{spec.name}[/bold]: {counts}")
    if outcome.undelivered:
        errors.print(
            f"[yellow]warning:[/yellow] results could not be written ({outcome.delivery_error}); they wait in the "
            f"outbox: run `orchestrator resume {spec.name}` when the database is back", highlight=False,
        )
        raise typer.Exit(1)
    print_frontier(store, spec.name)


def _progress_view(holder: dict):
    progress = holder.get("p")
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


@app.command("list")
def list_sweeps(db: DbOption = None) -> None:
    """All sweeps with their trial counts."""
    with user_errors():
        sweeps = open_store(db).list_sweeps()
    counted = (TrialStatus.COMPLETED, TrialStatus.RUNNING, TrialStatus.FAILED)
    table = Table()
    for column in ("sweep", "task", "metric", "status", "trials", *counted, "created"):
        table.add_column(column)
    for s in sweeps:
        counts = s.trial_counts
        table.add_row(
            s.name, s.task, f"{s.metric} ({s.mode})", s.status, str(sum(counts.values())),
            *(str(counts.get(status, 0)) for status in counted), f"{s.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command()
def status(name: Annotated[str | None, typer.Argument()] = None, db: DbOption = None) -> None:
    """A sweep's progress and failed trials (without NAME: every sweep)."""
    if name is None:
        list_sweeps(db)
        return
    with user_errors():
        store = open_store(db)
        sweep = store.find_sweep(name)
        frame = store.summary_frame(name)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep.trial_counts.items()))
    console.print(f"[bold]{name}[/bold] ({sweep.status}): {len(frame)} trials: {counts}")
    for row in frame[frame["status"] == TrialStatus.FAILED].itertuples():
        console.print(f"  failed {row.id}: {getattr(row, 'error', '') or ''}", highlight=False)


@app.command()
def cancel(name: str, db: DbOption = None) -> None:
    """Stop a sweep: its running driver stops launching and stops its trials; `resume` continues it."""
    with user_errors():
        open_store(db).set_sweep_status(name, SweepStatus.STOPPED)
    console.print(f"{name}: stopped")


@app.command()
def export(
    name: str,
    format: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: NAME.FORMAT).")] = None,
    db: DbOption = None,
) -> None:
    """Write one row per trial (allocation, status, every metric summary) as CSV or Parquet."""
    with user_errors():
        if format not in ("csv", "parquet"):
            raise UserError(f"--format must be csv or parquet, got {format!r}")
        frame = open_store(db).metric_frame(name).trials
        target = out or Path(f"{name}.{format}")
        partial = target.with_name(target.name + ".partial")
        try:
            frame.to_csv(partial, index=False) if format == "csv" else frame.to_parquet(partial, index=False)
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror}") from None
        partial.replace(target)
    console.print(f"wrote {len(frame)} trials to {target}")
