"""Commands that plan, run and inspect sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from resultsdb import FINISHED_SWEEP_STATUSES, ResultsStore, SweepStatus, TrialStatus

from .. import adaptive
from ..lease import driver_lease
from ..plan import plan as expand
from ..spec import SweepSpec, load_spec
from .analysis import print_frontier
from .common import AddressOption, DbOption, UserError, console, errors, open_store, spec_of, user_errors
from .progress import sweep_progress

app = typer.Typer()  # its commands join the main app (orchestrator.cli)

SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec (YAML).")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Take the sweep over from the driver that runs it (even if it is alive).")
]


@app.command()
def plan(spec_path: SpecArgument) -> None:
    """Print the expanded trial table of a sweep spec without running anything (of an adaptive search: what it
    starts first)."""
    with user_errors():
        spec, _ = load_spec(spec_path)
        trials = expand(spec, str(spec_path))
    title = f"{spec.name}: {len(trials)} trials"
    if spec.search.type == "adaptive":
        candidates = ", ".join(str(d) for d in sorted({t.model.d_m for t in trials}))
        console.print(f"{spec.name}: adaptive search, at most {adaptive.most_trials(spec, trials)} trials over "
                      f"{len(spec.budgets)} budgets (d_m from {candidates}), chosen as trials finish",
                      highlight=False, soft_wrap=True)
        trials = adaptive.first_trials(spec, trials)
        title = f"{spec.name}: the first {len(trials)} trials"
    table = Table(title=title, show_lines=False)
    other_axes = [axis for axis in trials[0].axes if axis != "d_m"]  # d_m has its own column
    for column in ("budget", *other_axes, "N", "d_m", "k_e", "k_c", "P", "shortfall", "seed"):
        table.add_column(column, justify="right")
    for t in trials:
        table.add_row(
            f"{t.budget:.3g}", *(str(t.axes[axis]) for axis in other_axes), str(t.model.n_hidden), str(t.model.d_m),
            f"{t.params.k_e:,}", f"{t.params.k_c:,}", f"{t.params.params_total:,}", f"{t.shortfall:+.2%}", str(t.seed),
        )
    console.print(table)


@app.command()
def submit(
    spec_path: SpecArgument, db: DbOption = None, address: AddressOption = None, force: ForceOption = False
) -> None:
    """Record a sweep and all its trials, then run them on Ray Tune (resubmitting the same spec resumes it)."""
    with user_errors():
        spec, text = load_spec(spec_path)
        expand(spec, str(spec_path))  # every spec problem surfaces before the database is touched
        store = open_store(db, create=True)
        _execute(spec, text, store, address, only=None, force=force)


@app.command()
def resume(name: str, db: DbOption = None, address: AddressOption = None, force: ForceOption = False) -> None:
    """Run what is unfinished of a sweep (after a killed driver, a reboot, a database outage)."""
    with user_errors():
        store = open_store(db, migrate=True)
        spec, text = spec_of(store, name)
        _execute(spec, text, store, address, only=None, force=force)


@app.command("retry-failed")
def retry_failed(name: str, db: DbOption = None, address: AddressOption = None, force: ForceOption = False) -> None:
    """Run the failed trials of a sweep again (they resume from their last checkpoint)."""
    from .. import runner  # Ray loads here and in _execute: the other commands start without it.

    with user_errors():
        store = open_store(db, migrate=True)
        spec, text = spec_of(store, name)
        failed = [tid for tid, status in runner.trial_statuses(store, name).items() if status == TrialStatus.FAILED]
        if not failed:
            console.print(f"{name}: no failed trials")
            return
        _execute(spec, text, store, address, only=failed, force=force)


def _execute(spec: SweepSpec, text: str, store: ResultsStore, address: str | None, only: list[str] | None,
             force: bool) -> None:
    from .. import runner

    trials = runner.prepare(spec, text, store)
    with driver_lease(store, spec.name, force=force), sweep_progress(console, spec.name, trials) as live:
        outcome = runner.run(spec, trials, store, address=address, only=only, live=live)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.statuses.items()))
    console.print(f"[bold]{spec.name}[/bold]: {counts}")
    if outcome.undelivered:
        errors.print(
            f"[yellow]warning:[/yellow] results could not be written ({outcome.delivery_error}); they wait in the "
            f"outbox: run `orchestrator resume {spec.name}` when the database is back", highlight=False,
        )
        raise typer.Exit(1)
    if outcome.stalled:
        errors.print(f"[red]error:[/red] the search stopped: {outcome.stalled}; `orchestrator resume {spec.name}` "
                     "continues it", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    failed = outcome.statuses[TrialStatus.FAILED]
    where = (f"their errors: `orchestrator status {spec.name}`; run them again: "
             f"`orchestrator retry-failed {spec.name}`")
    if outcome.sweep_status == SweepStatus.FAILED:
        errors.print(f"[red]error:[/red] all {failed} trials failed; {where}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    print_frontier(store, spec.name)
    if failed:
        errors.print(f"[yellow]warning:[/yellow] {failed} of {outcome.statuses.total()} trials failed; {where}",
                     highlight=False, soft_wrap=True)


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
    """A sweep's progress, failed trials and its search's decisions (without NAME: every sweep)."""
    if name is None:
        list_sweeps(db)
        return
    with user_errors():
        store = open_store(db)
        sweep = store.find_sweep(name)
        frame = store.summary_frame(name)
        decisions = adaptive.decisions(store, name)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep.trial_counts.items()))
    console.print(f"[bold]{name}[/bold] ({sweep.status}): {len(frame)} trials: {counts}")
    for row in frame[frame["status"] == TrialStatus.FAILED].itertuples():
        console.print(f"  failed {row.id}: {getattr(row, 'error', '') or ''}", highlight=False)
    if decisions:
        console.print("the search's decisions:")
    for event in decisions:
        trial = f" ({event.trial_id})" if event.trial_id else ""
        console.print(f"  budget {event.payload['budget']:.3g}: {event.payload['reason']}{trial}", highlight=False,
                      markup=False, soft_wrap=True)


@app.command()
def cancel(name: str, db: DbOption = None) -> None:
    """Stop an unfinished sweep: its running driver stops launching and stops its trials; `resume` continues it."""
    with user_errors():
        previous = open_store(db, migrate=True).stop_sweep(name)
    if previous in FINISHED_SWEEP_STATUSES:
        console.print(f"{name}: already {previous}, nothing to cancel")
    else:
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
        frame = open_store(db).summary_frame(name)
        target = out or Path(f"{name}.{format}")
        partial = target.with_name(target.name + ".partial")
        try:
            frame.to_csv(partial, index=False) if format == "csv" else frame.to_parquet(partial, index=False)
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror}") from None
        partial.replace(target)
    console.print(f"wrote {len(frame)} trials to {target}")
