"""Recorded predictions: what `suggest` prints of the one it records, and `predictions`, each scored against the
trials that have since finished at its budget."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from analysis import score_prediction
from resultsdb import PredictionInfo

from .common import DbOption, console, interval_text, open_store, user_errors

app = typer.Typer()  # its commands join the main app (orchestrator.cli)


def print_recorded(prediction: PredictionInfo, created: bool) -> None:
    """The prediction `suggest` recorded: its id, law, data snapshot and intervals, and when it will be scored."""
    predicted = prediction.predicted
    budgets = ", ".join(f"{budget:,}" for budget in prediction.snapshot_budgets)
    recorded = "recorded" if created else "was recorded before from the same data"
    console.print(f"prediction {prediction.id} {recorded}: the optimum at P = {prediction.budget:,} by the "
                  f"{predicted.law} law, fitted on {prediction.snapshot_trials} trials at budgets {budgets} "
                  f"(snapshot {prediction.snapshot_hash[:12]})", highlight=False)
    values = [("d_m", predicted.d_m, ".3g"), ("N", predicted.n_hidden, ",.0f"), ("k_e", predicted.k_e, ",.0f"),
              (prediction.metric, predicted.metric, ".4f")]
    console.print("  " + "   ".join(f"{label} {interval_text(estimate, spec)}" for label, estimate, spec in values),
                  highlight=False)
    console.print(f"  scored once trials at budget {prediction.budget:,} finish in a sweep of task "
                  f"{prediction.task!r} with the same settings: `orchestrator predictions --sweep {prediction.sweep}`",
                  highlight=False)


@app.command()
def predictions(
    db: DbOption = None,
    sweep: Annotated[str | None, typer.Option(help="Only those made from this sweep or scored against its trials.")]
    = None,
) -> None:
    """Recorded predictions against what was observed at their budgets: inside the 95% interval?, error, regret.

    Each is scored once the trials at its budget have finished in a sweep of the same task and settings.
    Example: orchestrator predictions --sweep quickstart
    """
    with user_errors():
        listed = open_store(db).score_predictions(score_prediction, sweep)
    if not listed:
        console.print("no predictions recorded yet: `orchestrator suggest NAME` records one")
        return
    console.print(_table(listed))


def _table(listed: list[PredictionInfo]) -> Table:
    metrics = ", ".join(sorted({prediction.metric for prediction in listed}))
    table = Table(title=f"Predictions: the optimum predicted [95% interval] over the one observed at its budget "
                        f"({metrics}); regret: how much worse the allocation nearest the predicted d_m did than the "
                        "best")
    for column in ("id", "from sweep", "budget", "law", "d_m*", "metric*", "error", "regret", "scored against"):
        table.add_column(column, justify="left" if column in ("from sweep", "law", "scored against") else "right")
    for prediction in listed:
        predicted, score = prediction.predicted, prediction.score
        d_m, metric = interval_text(predicted.d_m, ".3g"), interval_text(predicted.metric, ".4g")
        cells = [str(prediction.id), prediction.sweep, f"{prediction.budget:,}", predicted.law]
        if score is None:
            table.add_row(*cells, f"{d_m}\nwaiting for its trials", metric, "", "", "")
            continue
        observed = score.observed
        edge = f", {observed['edge']} edge" if observed["edge"] else ""
        table.add_row(
            *cells, f"{d_m}\n{observed['d_m']['value']:.3g} ({_inside(score.d_m_inside)}{edge})",
            f"{metric}\n{observed['metric']['value']:.4g} ({_inside(score.metric_inside)})",
            f"{score.metric_error:+.4g}", f"{score.regret:.4g}", ", ".join(score.sweeps),
        )
    return table


def _inside(inside: bool) -> str:
    return "inside" if inside else "outside"
