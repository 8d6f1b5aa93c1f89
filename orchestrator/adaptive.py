"""A sweep's adaptive search (spec `search: {type: adaptive}`): analysis.search's decisions carried out as ordinary
trials.

Budget by budget, smallest first: the trials the search started are read back from the database (their
validation curves; stopped or not), `search_step` says what to do next, and the runner does it: start trials
(trained to the rung, where they pause with a checkpoint), continue paused ones to the end, or stop them. Each
decision is a "search_decision" event naming its trial and why; `orchestrator status` lists them. The database
is the only state: after a kill, `resume` reads the same trials back and the search makes the same decisions, so
nothing that finished is redone and a trial cut off on its way resumes from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from analysis.search import Decision, SearchSettings, TrialReport, coarse_grid, predict_d_m, rung_step, search_step
from elm_core.train import TrainConfig
from resultsdb import EventInfo, ResultsStore, TrialStatus, UnknownMetric

from .plan import TrialPlan
from .spec import SweepSpec

DECISION_EVENT = "search_decision"
STOPPED = frozenset({TrialStatus.STOPPED_EARLY, TrialStatus.FAILED})


class SearchStalled(RuntimeError):
    """Results could not reach the database, or trials made no progress: the search cannot judge them."""


@dataclass
class SearchHands:
    """What the runner does for the search."""

    fit: Callable[[list[TrialPlan], int | None], None]  # train these trials to this step (None: to the end)
    stop: Callable[[str, str], None]  # mark a paused trial stopped early (its id, why)
    settle: Callable[[], bool]  # every result so far in the database
    cancelled: Callable[[], bool]


def settings_of(spec: SweepSpec) -> SearchSettings:
    s = spec.search
    return SearchSettings(steps=_train_config(spec).steps, coarse_size=s.coarse_size, coarse_stride=s.coarse_stride,
                          rung_fraction=s.rung_fraction, target_width=s.target_width, max_trials=s.max_trials)


def rung_of(spec: SweepSpec) -> int:
    """The evaluation step at which the search judges its trials (the validation metric is reported there)."""
    cfg = _train_config(spec)
    evaluations = [*range(cfg.eval_every, cfg.steps, cfg.eval_every), cfg.steps]
    return rung_step(cfg.steps, spec.search.rung_fraction, evaluations)


def candidates_by_budget(trials: list[TrialPlan]) -> dict[float, dict[float, TrialPlan]]:
    out: dict[float, dict[float, TrialPlan]] = {}
    for t in sorted(trials, key=lambda t: (t.budget, t.model.d_m)):
        out.setdefault(t.budget, {})[float(t.model.d_m)] = t
    return out


def most_trials(spec: SweepSpec, trials: list[TrialPlan]) -> int:
    """The most trials the search can start: its trial budget at every budget."""
    return sum(min(spec.search.max_trials, len(c)) for c in candidates_by_budget(trials).values())


def first_trials(spec: SweepSpec, trials: list[TrialPlan]) -> list[TrialPlan]:
    """What the search starts first: the coarse grid at the smallest budget, centred (no law yet) in the middle."""
    candidates = next(iter(candidates_by_budget(trials).values()))
    return [candidates[d] for d in coarse_grid(sorted(candidates), None, settings_of(spec))]


def decisions(store: ResultsStore, sweep: str) -> list[EventInfo]:
    """The search's recorded decisions, oldest first."""
    events, after = [], 0
    while page := store.events_since(after, sweep=sweep, kind=DECISION_EVENT):
        events += page
        after = page[-1].id
    return events


def run_search(spec: SweepSpec, trials: list[TrialPlan], store: ResultsStore, hands: SearchHands) -> None:
    """Search every budget to its end (or until cancelled); raises SearchStalled when it cannot judge."""
    settings, rung = settings_of(spec), rung_of(spec)
    recorded = {_key(e.payload) for e in decisions(store, spec.name)}
    budgets: list[float] = []
    optima: list[float] = []
    for budget, candidates in candidates_by_budget(trials).items():
        predicted = predict_d_m(budgets, optima, budget)
        behind_before: dict[str, int] | None = None  # the trials last taken to the rung, and where they were
        while not hands.cancelled():
            if not hands.settle():
                raise SearchStalled("results could not be written to the database")
            reports = _reports(store, spec, candidates)
            behind = {candidates[d].trial_id: r.last_step for d, r in reports.items()
                      if not r.stopped and r.last_step < rung}
            if behind and behind == behind_before:  # a fit that moved none of them on would repeat forever
                raise SearchStalled(f"trials at budget {budget:g} ({', '.join(behind)}) made no progress "
                                    "towards the rung")
            if behind:  # started, then cut off before the rung (a killed driver): take them there first
                behind_before = behind
                hands.fit([t for t in candidates.values() if t.trial_id in behind], rung)
                continue
            step = search_step(list(candidates), list(reports.values()), predicted, settings)
            for decision in step.decisions:
                _record(store, spec.name, budget, decision, candidates, recorded)
            if step.done:
                if step.best_d_m is not None:
                    budgets.append(budget)
                    optima.append(step.best_d_m)
                break
            starts = [candidates[d.d_m] for d in step.decisions if d.action == "start"]
            if starts:
                store.add_trials(spec.name, [t.row() for t in starts])
                hands.fit(starts, rung)
            for decision in step.decisions:
                if decision.action == "stop":
                    hands.stop(candidates[decision.d_m].trial_id, decision.reason)
            if continued := [candidates[d.d_m] for d in step.decisions if d.action == "continue"]:
                hands.fit(continued, None)


def _reports(store: ResultsStore, spec: SweepSpec, candidates: dict[float, TrialPlan]) -> dict[float, TrialReport]:
    """The search's trials at one budget so far (the candidates that are in the database)."""
    page = store.query_trials(spec.name, fields=["id", "status"], limit=None)
    statuses = {row["id"]: row["status"] for row in page.rows}
    reports = {}
    for d_m, t in candidates.items():
        if t.trial_id in statuses:
            reports[d_m] = TrialReport(d_m, _curve(store, t.trial_id, spec.valid_metric),
                                       stopped=statuses[t.trial_id] in STOPPED)
    return reports


def _curve(store: ResultsStore, trial_id: str, metric: str) -> dict[int, float]:
    try:
        points = store.series(trial_id, metric, max_points=100_000)
    except UnknownMetric:  # nothing in the sweep has reported it yet
        return {}
    return {p.step: p.value for p in points if p.value is not None}


def _record(store: ResultsStore, sweep: str, budget: float, decision: Decision,
            candidates: dict[float, TrialPlan], recorded: set[tuple]) -> None:
    """One event per decision: a resumed search repeats its decisions without recording them again."""
    payload = {"budget": budget, "action": decision.action, "d_m": decision.d_m, "reason": decision.reason}
    if _key(payload) in recorded:
        return
    recorded.add(_key(payload))
    trial = candidates.get(decision.d_m) if decision.d_m is not None else None
    store.record_event(DECISION_EVENT, payload, sweep=sweep, trial_id=trial.trial_id if trial else None)


def _key(payload: dict) -> tuple:
    return float(payload["budget"]), payload["action"], payload["d_m"]


def _train_config(spec: SweepSpec) -> TrainConfig:
    return TrainConfig(**spec.training)
