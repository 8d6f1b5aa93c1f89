"""Commands that analyse a sweep's results: the frontier, the laws, the next sweep (and its recorded prediction),
plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from analysis import FitError, locate_optima, next_budget, per_budget_optimum, predict_optimum, suggest_next_sweep
from analysis.laws import LAWS, fit_laws
from analysis.predictions import PREDICTING_LAWS
from resultsdb import CONFIG_COLUMNS, METRIC_COLUMN, MetricMode, ResultsStore

from ..spec import parse_spec
from .common import DbOption, UserError, console, errors, interval_text, open_store, spec_of, user_errors
from .predictions import print_recorded

app = typer.Typer()  # its commands join the main app (orchestrator.cli)

ALLOCATION = list(CONFIG_COLUMNS)  # what tells allocations apart: every allocation column but the seed
MetricOption = Annotated[str | None, typer.Option(
    help="Metric to compare trials by: any metric the trials reported, e.g. valid_bpc or train_loss; a trial's final "
    "value, else its best (default: the sweep's metric from its spec, e.g. test_bpc).")]
LawOption = Annotated[str, typer.Option("--law", help="frontier, allocation, surface, tradeoff, or all.")]


@app.command()
def frontier(name: str, db: DbOption = None, metric: MetricOption = None) -> None:
    """The best allocation at each budget (seeds averaged) and the runner-up."""
    with user_errors():
        print_frontier(open_store(db), name, metric)


def print_frontier(store: ResultsStore, name: str, metric: str | None = None) -> None:
    frame, metric, mode = store.metric_frame(name, metric)
    try:
        best = per_budget_optimum(frame, METRIC_COLUMN, mode, config_columns=ALLOCATION)
        located = {o.budget: o for o in locate_optima(frame, METRIC_COLUMN, mode, config_columns=ALLOCATION,
                                                      n_bootstrap=500).optima}
    except FitError:
        console.print(f"{name}: no finished trial has {metric} yet")
        return
    better = "lower" if mode == MetricMode.MIN else "higher"
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
            *((interval_text(optimum.d_m, ".3g"), interval_text(optimum.metric, ".4f")) if optimum.interior
              else (f"{optimum.grid_best:g} (edge)", f"{optimum.grid_best_metric:.4f}")),
        )
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


@app.command()
def fit(
    name: str,
    db: DbOption = None,
    metric: MetricOption = None,
    law: LawOption = "all",
    budget: Annotated[float | None, typer.Option(help="Also predict the optimum at this budget.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fits as JSON (the API's /laws answer).")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the JSON here.")] = None,
) -> None:
    """Fit the sweep's laws (frontier, allocation N*/k_e*/d_m*(P), surface, tradeoff) with 95% intervals.

    Example: orchestrator fit quickstart --law frontier --budget 1e6 --json
    """
    with user_errors():
        if law != "all" and law not in LAWS:
            raise UserError(f"--law must be one of {', '.join(LAWS)} or all, got {law!r}")
        if budget is not None and not budget > 0:
            raise UserError(f"--budget must be a positive number of parameters, got {budget:g}")
        if bootstrap < 20:
            raise UserError(f"--bootstrap must be at least 20, got {bootstrap}")
        frame, metric, mode = open_store(db).metric_frame(name, metric)
        reports, refused = fit_laws(frame, METRIC_COLUMN, mode, LAWS if law == "all" else (law,), metric_name=metric,
                                    config_columns=ALLOCATION, budget=budget, n_bootstrap=bootstrap)
        if not reports and law != "all":
            raise UserError(f"{name}: cannot fit the {law} law: {refused[law]}")
        if not reports:
            reasons = "; ".join(f"{which}: {why}" for which, why in refused.items())
            raise UserError(f"{name}: no law can be fitted yet ({reasons})")
    laws = [{"sweep": name, **report.to_dict()} for report in reports]
    payload = (laws[0] if law != "all" else
               {"sweep": name, "metric": metric, "mode": mode, "laws": laws, "refused": refused})
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
    budget: Annotated[float | None, typer.Option(help="Budget of the next sweep (default: 3x the largest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Spec file to write (default: NAME-next.yaml).")] = None,
    db: DbOption = None,
    law: Annotated[str, typer.Option(help="Law that predicts the optimum: allocation (N*/k_e*/d_m*(P), the metric "
                                          "from the frontier law), surface, tradeoff, or auto (the first of them "
                                          "that can).")] = "auto",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the prediction's intervals.")] = 200,
) -> None:
    """Write the next sweep spec (a larger budget, d_m grid centred on the predicted optimum) and record the
    prediction: d_m, N, k_e and the metric at that budget with 95% intervals, fitted on the trials below it.

    `orchestrator predictions` scores it once trials at that budget finish, in the suggested sweep or any of the same
    task and settings. Example: orchestrator suggest quickstart --budget 6e5
    """
    with user_errors():
        if budget is not None and not budget > 0:
            raise UserError(f"--budget must be a positive number of parameters, got {budget:g}")
        if law != "auto" and law not in PREDICTING_LAWS:
            raise UserError(f"--law must be one of {', '.join(PREDICTING_LAWS)} or auto, got {law!r}")
        if bootstrap < 20:
            raise UserError(f"--bootstrap must be at least 20, got {bootstrap}")
        store = open_store(db, migrate=True)
        frame, metric, mode = store.metric_frame(name)
        base, _ = spec_of(store, name)
        unpredicted = None
        try:
            prediction = predict_optimum(frame, METRIC_COLUMN, mode, next_budget(frame, budget), law,
                                         config_columns=ALLOCATION, n_bootstrap=bootstrap)
        except FitError as error:
            prediction, unpredicted = None, str(error)
        if prediction is None and law != "auto":
            raise UserError(f"{name}: the {law} law cannot predict the optimum: {unpredicted}")
        try:
            next_spec = suggest_next_sweep(frame, base.model_dump(mode="json", exclude_defaults=True), METRIC_COLUMN,
                                           mode, budget=budget, centre=prediction.d_m.value if prediction else None)
        except FitError as error:
            raise UserError(f"{name}: cannot suggest a next sweep: {error}") from None
        next_spec["metric"] = {"name": metric, "mode": mode.value}
        text = yaml.safe_dump(next_spec, sort_keys=False)
        parse_spec(text, "suggested spec")
        target = out or Path(f"{name}-next.yaml")
        target.write_text(text)
        recorded = store.create_prediction(name, prediction.to_dict(), metric=metric) if prediction else None
    console.print(f"wrote {target}: budget {next_spec['budgets'][0]:.3g}, "
                  f"d_m {next_spec['allocation']['vary']['d_m']}")
    if recorded is None:
        console.print(f"no prediction recorded: {unpredicted}", highlight=False)
    else:
        print_recorded(*recorded)


@app.command()
def plot(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG and SVG files.")] = Path("plots"),
    db: DbOption = None,
    metric: MetricOption = None,
) -> None:
    """Frontier with its fitted law, metric vs d_m per budget with the model curves and located optima, and the
    optimum's trajectory d_m*(P), N*(P) with the allocation laws (PNG and SVG)."""
    # matplotlib loads here: the other commands start without it.
    from analysis.plots import plot_frontier, plot_metric_vs_allocation, plot_optimum_trajectory

    with user_errors():
        frame, metric, mode = open_store(db).metric_frame(name, metric)
        frame = frame.rename(columns={METRIC_COLUMN: metric})
        out.mkdir(parents=True, exist_ok=True)
        try:
            optima = locate_optima(frame, metric, mode, config_columns=ALLOCATION, n_bootstrap=200)
        except FitError:
            optima = None
        reports, _ = fit_laws(frame, metric, mode, config_columns=ALLOCATION, optima=optima, n_bootstrap=200)
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
