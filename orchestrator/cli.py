"""The `orchestrator` command line: plan, submit, resume and inspect sweeps.

Every error a user can cause prints one line per problem and exits with status 2.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from .spec import SpecError, SweepSpec, load_spec, parse_spec

app = typer.Typer(
    help="Scaling-law sweeps of ELM networks on Ray Tune, results in a SQL database.\n\n"
    "Example: orchestrator submit sweeps/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get the whole table
errors = Console(stderr=True)

DbOption = Annotated[
    Optional[str],
    typer.Option("--db", envvar="ELMSCALE_DATABASE_URL", help="Database URL (default: sqlite:///elmscale.db)."),
]
AddressOption = Annotated[
    Optional[str],
    typer.Option("--address", envvar="RAY_ADDRESS",
                 help="Address of an existing Ray cluster, or 'auto' on one of its nodes (default: start a local one)."),
]


def allocation_columns() -> list[str]:
    """A trial's configuration apart from its seed: what tells allocations apart in the analyses."""
    from resultsdb.models import ALLOCATION_COLUMNS

    return [column for column in ALLOCATION_COLUMNS if column != "seed"]


class UserError(Exception):
    """A problem the user can fix; each line is printed as it is."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = lines


def fail(*lines: str) -> None:
    for line in lines:
        errors.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors():
    """Turn the errors a user can cause into one line each and exit status 2; no traceback."""
    from resultsdb import ConflictError, DatabaseUnavailable, NotFound

    try:
        yield
    except SpecError as error:
        fail(*error.problems)
    except UserError as error:
        fail(*error.lines)
    except (ConflictError, NotFound, DatabaseUnavailable) as error:
        fail(str(error))


def open_store(db: str | None):
    """The results store at `db`, its schema migrated to the current version."""
    from resultsdb import ResultsStore, migrate

    migrate.upgrade(db)
    return ResultsStore(db)


def spec_of(store, name: str) -> tuple[SweepSpec, str]:
    sweep = store.get_sweep(name)
    if sweep is None:
        raise UserError(f"no sweep named {name!r} in the database (see `orchestrator list`)")
    return parse_spec(sweep.spec_text, f"sweep {name}"), sweep.spec_text


# --- planning and running --------------------------------------------------------------------------------------


@app.command()
def plan(spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec (YAML).")]) -> None:
    """Print the expanded trial table of a sweep spec without running anything."""
    from .plan import plan as expand

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
def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Sweep spec (YAML).")],
    db: DbOption = None,
    address: AddressOption = None,
) -> None:
    """Record a sweep and all its trials, then run them on Ray Tune (resubmitting the same spec resumes it)."""
    from .plan import plan as expand

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
    from .runner import trial_statuses

    with user_errors():
        store = open_store(db)
        spec, text = spec_of(store, name)
        failed = [tid for tid, status in trial_statuses(store, name).items() if status == "failed"]
        if not failed:
            console.print(f"{name}: no failed trials")
            return
        _execute(spec, text, store, address, only=failed)


def _execute(spec: SweepSpec, text: str, store, address: str | None, only) -> None:
    from . import runner

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
    _print_frontier(store, spec.name)


def _progress_view(holder: dict):
    progress = holder.get("p")
    if progress is None:
        return "planning..."
    counts = progress.counts()
    done = sum(counts[s] for s in ("completed", "stopped_early", "failed"))
    bar = ProgressBar(total=progress.total, completed=done, width=40)
    line = (f"trials {done}/{progress.total}  running {counts['running']}  failed {counts['failed']}  "
            f"stopped early {counts['stopped_early']}")
    table = Table(title=f"best {progress.metric} so far", title_justify="left")
    table.add_column("budget", justify="right")
    table.add_column(progress.metric, justify="right")
    with progress.lock:
        for budget, value in sorted(progress.best_by_budget.items()):
            table.add_row(f"{budget:.3g}", f"{value:.4f}")
    return Group(bar, line, table)


# --- inspecting ----------------------------------------------------------------------------------------------------


@app.command("list")
def list_sweeps(db: DbOption = None) -> None:
    """All sweeps with their trial counts."""
    with user_errors():
        sweeps = open_store(db).list_sweeps()
    table = Table()
    for column in ("sweep", "task", "metric", "status", "trials", "completed", "running", "failed", "created"):
        table.add_column(column)
    for s in sweeps:
        counts = s.trial_counts
        table.add_row(
            s.name, s.task, f"{s.metric} ({s.mode})", s.status, str(sum(counts.values())),
            str(counts.get("completed", 0)), str(counts.get("running", 0)), str(counts.get("failed", 0)),
            f"{s.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command()
def status(name: Annotated[Optional[str], typer.Argument()] = None, db: DbOption = None) -> None:
    """A sweep's progress and failed trials (without NAME: every sweep)."""
    if name is None:
        list_sweeps(db)
        return
    with user_errors():
        store = open_store(db)
        sweep = store.get_sweep(name)
        if sweep is None:
            raise UserError(f"no sweep named {name!r} in the database (see `orchestrator list`)")
        frame = store.summary_frame(name)
    total = len(frame)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep.trial_counts.items()))
    console.print(f"[bold]{name}[/bold] ({sweep.status}): {total} trials: {counts}")
    failed = frame[frame["status"] == "failed"]
    for row in failed.itertuples():
        console.print(f"  failed {row.id}: {getattr(row, 'error', '') or ''}", highlight=False)


@app.command()
def cancel(name: str, db: DbOption = None) -> None:
    """Stop a sweep: its running driver stops launching and stops its trials; `resume` continues it."""
    with user_errors():
        store = open_store(db)
        if store.get_sweep(name) is None:
            raise UserError(f"no sweep named {name!r} in the database (see `orchestrator list`)")
        store.set_sweep_status(name, "stopped")
    console.print(f"{name}: stopped")


@app.command()
def frontier(name: str, db: DbOption = None, metric: Annotated[Optional[str], typer.Option()] = None) -> None:
    """The best allocation at each budget (seeds averaged) and the runner-up."""
    with user_errors():
        store = open_store(db)
        if store.get_sweep(name) is None:
            raise UserError(f"no sweep named {name!r} in the database (see `orchestrator list`)")
        _print_frontier(store, name, metric)


def _print_frontier(store, name: str, metric: str | None = None) -> None:
    from analysis.fitting import FitError
    from analysis.frontier import per_budget_optimum
    from analysis.optimum import locate_optima
    from resultsdb.frames import METRIC_COLUMN, metric_frame

    frame, metric, mode = metric_frame(store, name, metric)
    try:
        best = per_budget_optimum(frame, METRIC_COLUMN, mode, config_columns=allocation_columns())
        located = {o.budget: o for o in locate_optima(frame, METRIC_COLUMN, mode, config_columns=allocation_columns(),
                                                      n_bootstrap=500).optima}
    except FitError:
        console.print(f"{name}: no finished trial has {metric} yet")
        return
    better = "lower" if mode == "min" else "higher"
    table = Table(title=f"{name}: best allocation per budget ({metric}, {better} is better); * = the optimum "
                        "located between grid points [95% interval]")
    for column in ("budget", "N", "d_m", "k_e", "k_c", "P", metric, "seeds", "runner-up", "d_m*", f"{metric}*"):
        table.add_column(column, justify="right")
    notes = []
    for row in best.itertuples():
        runner = getattr(row, f"runner_up_{METRIC_COLUMN}")
        optimum = located[float(row.budget)]
        if optimum.note:
            notes.append(f"budget {row.budget:.4g}: {optimum.note}")
        table.add_row(
            f"{row.budget:.3g}", str(int(row.n_hidden)), str(int(row.d_m)), f"{int(row.k_e):,}", f"{int(row.k_c):,}",
            f"{int(row.params_total):,}", f"{getattr(row, METRIC_COLUMN):.4f}", str(int(row.n_seeds)),
            "" if runner != runner else f"d_m {int(row.runner_up_d_m)}: {runner:.4f}",
            *((_interval(optimum.d_m, ".3g"), _interval(optimum.metric, ".4f")) if optimum.interior
              else (f"{optimum.grid_best:g} (edge)", f"{optimum.grid_best_metric:.4f}")),
        )
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


def _interval(estimate, spec: str) -> str:
    """'value [low, high]'; an open or unknown side shows as '?' (an optimum at the grid's edge)."""
    if estimate is None:
        return ""
    ends = ["?" if not math.isfinite(end) else format(end, spec) for end in (estimate.ci_low, estimate.ci_high)]
    return f"{format(estimate.value, spec)} [{ends[0]}, {ends[1]}]"


@app.command()
def export(
    name: str,
    format: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    out: Annotated[Optional[Path], typer.Option("--out", help="Output file (default: NAME.FORMAT).")] = None,
    db: DbOption = None,
) -> None:
    """Write one row per trial (allocation, status, every metric summary) as CSV or Parquet."""
    from resultsdb.frames import metric_frame

    with user_errors():
        if format not in ("csv", "parquet"):
            raise UserError(f"--format must be csv or parquet, got {format!r}")
        store = open_store(db)
        frame, _, _ = metric_frame(store, name)
        target = out or Path(f"{name}.{format}")
        partial = target.with_name(target.name + ".partial")
        try:
            frame.to_csv(partial, index=False) if format == "csv" else frame.to_parquet(partial, index=False)
        except OSError as error:
            raise UserError(f"cannot write {target}: {error.strerror}") from None
        partial.replace(target)
    console.print(f"wrote {len(frame)} trials to {target}")


# --- analysis ------------------------------------------------------------------------------------------------------


def _trial_table(db: str | None, name: str, metric: str | None):
    from resultsdb.frames import metric_frame

    store = open_store(db)
    if store.get_sweep(name) is None:
        raise UserError(f"no sweep named {name!r} in the database (see `orchestrator list`)")
    return store, *metric_frame(store, name, metric)


LawOption = Annotated[str, typer.Option("--law", help="frontier, allocation, surface, tradeoff, or all.")]


@app.command()
def fit(
    name: str,
    db: DbOption = None,
    metric: Annotated[Optional[str], typer.Option(help="A reported metric (default: the sweep's).")] = None,
    law: LawOption = "all",
    budget: Annotated[Optional[float], typer.Option(help="Also predict the optimum at this budget.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fits as JSON (the API's /laws answer).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON here.")] = None,
) -> None:
    """Fit the sweep's laws (frontier, allocation N*/k_e*/d_m*(P), surface, tradeoff) with 95% intervals.

    Example: orchestrator fit quickstart --law frontier --budget 1e6 --json
    """
    import json

    from analysis.laws import LAWS, fit_laws
    from resultsdb.frames import METRIC_COLUMN

    with user_errors():
        if law != "all" and law not in LAWS:
            raise UserError(f"--law must be one of {', '.join(LAWS)} or all, got {law!r}")
        if budget is not None and not budget > 0:
            raise UserError(f"--budget must be a positive number of parameters, got {budget:g}")
        if bootstrap < 20:
            raise UserError(f"--bootstrap must be at least 20, got {bootstrap}")
        _, frame, metric, mode = _trial_table(db, name, metric)
        reports, refused = fit_laws(frame, METRIC_COLUMN, mode, LAWS if law == "all" else (law,), metric_name=metric,
                                    config_columns=allocation_columns(), budget=budget, n_bootstrap=bootstrap)
        if not reports and law != "all":
            raise UserError(f"{name}: cannot fit the {law} law: {refused[law]}")
        if not reports:
            reasons = "; ".join(f"{which}: {why}" for which, why in refused.items())
            raise UserError(f"{name}: no law can be fitted yet ({reasons})")
    payload = ({"sweep": name, **reports[0].to_dict()} if law != "all" else
               {"sweep": name, "metric": metric, "mode": mode, "laws": [{"sweep": name, **r.to_dict()} for r in reports],
                "refused": refused})
    if as_json:
        print(json.dumps(payload, indent=2))
    else:
        for report in reports:
            console.print(_law_table(name, report))
        for which, why in refused.items():
            console.print(f"{which} law not fitted: {why}", highlight=False)
    if out:
        out.write_text(json.dumps(payload, indent=2))
        (errors if as_json else console).print(f"wrote {out}")


def _law_table(name: str, report) -> Table:
    quality = ", ".join(f"{key} {value:.4f}" for key, value in report.quality.items())
    table = Table(title=f"{name}: {report.law} law  {report.formula}\n"
                        f"fitted on {report.fitted_on}; {quality}; {report.n_trials} trials")
    for column in ("parameter", "value", "95% interval"):
        table.add_column(column, justify="right")
    for label, estimate in report.parameters.items():
        flag = " (not determined)" if label in report.undetermined else ""
        table.add_row(f"{label}{flag}", f"{estimate.value:.6g}", f"[{estimate.ci_low:.6g}, {estimate.ci_high:.6g}]")
    prediction = report.prediction
    if prediction is not None:
        for label in ("d_m", "n_hidden", "k_e", "metric"):
            estimate = getattr(prediction, label)
            if estimate is not None:
                table.add_row(f"{label} at P = {prediction.budget:.4g}", f"{estimate.value:.6g}",
                              f"[{estimate.ci_low:.6g}, {estimate.ci_high:.6g}]")
    for note in report.notes:
        table.add_row(note, "", "")
    return table


@app.command()
def suggest(
    name: str,
    budget: Annotated[Optional[float], typer.Option(help="Budget of the next sweep (default: 3x the largest).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Spec file to write (default: NAME-next.yaml).")] = None,
    db: DbOption = None,
) -> None:
    """Write the next sweep spec: a larger budget, d_m grid centred on the predicted optimum."""
    import yaml

    from analysis import FitError, suggest_next_sweep
    from resultsdb.frames import METRIC_COLUMN

    with user_errors():
        store, frame, metric, mode = _trial_table(db, name, None)
        base, _ = spec_of(store, name)
        try:
            next_spec = suggest_next_sweep(frame, base.model_dump(mode="json", exclude_defaults=True), METRIC_COLUMN,
                                           mode, budget=budget)
        except FitError as error:
            raise UserError(f"{name}: cannot suggest a next sweep: {error}") from None
        next_spec["metric"] = {"name": metric, "mode": mode}
        text = yaml.safe_dump(next_spec, sort_keys=False)
        parse_spec(text, "suggested spec")
        target = out or Path(f"{name}-next.yaml")
        target.write_text(text)
    console.print(f"wrote {target}: budget {next_spec['budgets'][0]:.3g}, d_m {next_spec['allocation']['vary']['d_m']}")


@app.command()
def plot(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG and SVG files.")] = Path("plots"),
    db: DbOption = None,
    metric: Annotated[Optional[str], typer.Option(help="A reported metric (default: the sweep's).")] = None,
) -> None:
    """Frontier with its fitted law, metric vs d_m per budget with the model curves and located optima, and the
    optimum's trajectory d_m*(P), N*(P) with the allocation laws (PNG and SVG)."""
    from analysis import FitError, locate_optima
    from analysis.laws import fit_laws
    from analysis.plots import plot_frontier, plot_metric_vs_allocation, plot_optimum_trajectory
    from resultsdb.frames import METRIC_COLUMN

    with user_errors():
        _, frame, metric, mode = _trial_table(db, name, metric)
        frame = frame.rename(columns={METRIC_COLUMN: metric})
        out.mkdir(parents=True, exist_ok=True)
        try:
            optima = locate_optima(frame, metric, mode, config_columns=allocation_columns(), n_bootstrap=200)
        except FitError:
            optima = None
        reports, _ = fit_laws(frame, metric, mode, config_columns=allocation_columns(), optima=optima, n_bootstrap=200)
        laws = {report.law: report for report in reports}
        try:
            written = [
                *plot_frontier(frame, metric, mode, out / f"{name}_frontier", law=laws.get("frontier")),
                *plot_metric_vs_allocation(frame, metric, mode, out / f"{name}_tradeoff", optima=optima,
                                           models=[laws[k] for k in ("surface", "tradeoff") if k in laws]),
                *plot_optimum_trajectory(frame, metric, mode, out / f"{name}_optimum", optima=optima,
                                         law=laws.get("allocation")),
            ]
        except FitError as error:
            raise UserError(f"{name}: cannot plot: {error}") from None
    for path in written:
        console.print(f"wrote {path}")


# --- service -------------------------------------------------------------------------------------------------------

token_app = typer.Typer(help="Bearer tokens for the API's write endpoints.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(name: str, db: DbOption = None) -> None:
    """Create a token (printed once; only its hash is stored)."""
    with user_errors():
        token = open_store(db).create_token(name)
    console.print(token, highlight=False)


@token_app.command("revoke")
def token_revoke(name: str, db: DbOption = None) -> None:
    """Revoke a token by name."""
    with user_errors():
        if not open_store(db).revoke_token(name):
            raise UserError(f"no active token named {name!r}")
    console.print(f"revoked {name}")


@token_app.command("list")
def token_list(db: DbOption = None) -> None:
    """Tokens by name, with creation and revocation times."""
    with user_errors():
        tokens = open_store(db).list_tokens()
    for token in tokens:
        console.print(f"{token.name}  created {token.created_at:%Y-%m-%d %H:%M}"
                      + (f"  revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else ""))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    db: DbOption = None,
) -> None:
    """Start the API and dashboard (FastAPI under uvicorn); OpenAPI docs at /docs."""
    import os

    import uvicorn

    with user_errors():
        open_store(db).close()
    if db:
        os.environ["ELMSCALE_DATABASE_URL"] = db
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info")


# --- database ----------------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply all migrations to the database."""
    from resultsdb import migrate

    with user_errors():
        migrate.upgrade(db)
        console.print(f"database at revision {migrate.current(db)}")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Print the database's migration revision and whether it is the latest."""
    from resultsdb import migrate

    with user_errors():
        revision = migrate.current(db)
        console.print(f"{revision or '(empty)'}{' (head)' if migrate.is_at_head(db) else ' (behind: run `orchestrator db upgrade`)'}")


def main() -> None:
    app(prog_name="orchestrator")


if __name__ == "__main__":
    sys.exit(main())
