"""An adaptive search for one budget's optimum along d_m: where to look next, and which trials to stop.

The policy is a pure function of the trials reported so far (`search_step`): a runner calls it, carries out
its decisions, and calls it again; after a kill the same reports give the same decisions, so nothing that
finished is redone. At one budget it

1. starts a coarse grid of `coarse_size` allocations, `coarse_stride` candidates apart, centred on the
   predicted optimum (from the laws of budgets already measured, else the middle candidate);
2. judges every trial at the rung (the first report at or after `rung_fraction` of the steps): one that is
   neither the best explored allocation at the rung nor that best's explored neighbour is stopped there;
3. once none is pending, locates the optimum among the finished trials: at the edge of what was explored it
   adds the next candidate beyond, `coarse_stride` away; inside it adds the candidates between the best and
   its neighbours, until the interval (the log d_m span between the best's explored neighbours, which holds
   a unimodal profile's minimum) is at most `target_width` or `max_trials` trials were started.

Trials are single-seed (the search spends its compute on allocations, not on repeats); a second seed at the
reported optimum is the runner's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SearchSettings:
    steps: int
    coarse_size: int = 3
    coarse_stride: int = 1
    rung_fraction: float = 0.25
    target_width: float = 0.75  # log d_m: the interval spans at most a factor e**0.75 ≈ 2.1
    max_trials: int = 8


@dataclass(frozen=True)
class TrialReport:
    """One trial of the search: its allocation, the metric by step (lower is better), and whether it was stopped."""

    d_m: float
    curve: Mapping[int, float]
    stopped: bool = False

    @property
    def last_step(self) -> int:
        return max(self.curve) if self.curve else 0


@dataclass(frozen=True)
class Decision:
    action: str  # "start" (train to the rung), "continue" (to the end), "stop" (at the rung), "done"
    d_m: float | None
    reason: str


@dataclass
class SearchStep:
    decisions: list[Decision]
    best_d_m: float | None  # the best finished allocation so far
    interval: tuple[float, float] | None  # d_m bounds of the located optimum (inf where open)
    done: bool = field(default=False)


def predict_d_m(budgets: Sequence[float], best_d_m: Sequence[float], budget: float) -> float | None:
    """d_m* at `budget` from a power law through earlier budgets' optima (the one optimum itself with one)."""
    if not budgets:
        return None
    if len(set(budgets)) < 2:
        return float(best_d_m[-1])
    slope, intercept = np.polyfit(np.log(budgets), np.log(best_d_m), 1)
    return float(np.exp(intercept + slope * np.log(budget)))


def rung_step(steps: int, fraction: float, reported_steps: Sequence[int]) -> int:
    """The first reported step at or after `fraction` of `steps` (the rung at which trials are judged)."""
    later = [s for s in sorted(reported_steps) if s >= fraction * steps]
    return later[0] if later else steps


def coarse_grid(candidates: Sequence[float], predicted: float | None, settings: SearchSettings) -> list[float]:
    """`coarse_size` candidates `coarse_stride` apart, centred as near the prediction as the candidates allow."""
    n = len(candidates)
    centre = n // 2 if predicted is None else int(np.argmin(np.abs(np.log(candidates) - np.log(predicted))))
    span = (settings.coarse_size - 1) * settings.coarse_stride
    first = int(np.clip(centre - span // 2, 0, max(0, n - 1 - span)))
    return [candidates[i] for i in range(first, min(n, first + span + 1), settings.coarse_stride)]


def search_step(candidates: Sequence[float], reports: Sequence[TrialReport], predicted: float | None,
                settings: SearchSettings) -> SearchStep:
    """The next decisions of the search at one budget, given every trial reported so far."""
    candidates = sorted(candidates)
    by_d_m = {r.d_m: r for r in reports}
    if not reports:
        grid = coarse_grid(candidates, predicted, settings)
        centre = "the middle candidate" if predicted is None else f"the predicted optimum d_m {predicted:.3g}"
        return SearchStep([Decision("start", d, f"d_m {d:g} started: coarse grid around {centre}") for d in grid],
                          None, None)
    rung = rung_step(settings.steps, settings.rung_fraction, [s for r in reports for s in r.curve])
    at_rung = [r for r in reports if not r.stopped and r.last_step < settings.steps]
    if any(r.last_step < rung for r in at_rung):
        return SearchStep([], None, None)  # trials still on their way to the rung
    if at_rung:
        return SearchStep(_judge(at_rung, reports, rung), None, None)
    return _refine(candidates, by_d_m, settings)


def _judge(pending: Sequence[TrialReport], reports: Sequence[TrialReport], rung: int) -> list[Decision]:
    explored = sorted(r.d_m for r in reports)
    at_rung = {r.d_m: r.curve[rung] for r in reports if rung in r.curve}
    best = min(at_rung, key=at_rung.__getitem__)
    i = explored.index(best)
    kept = set(explored[max(0, i - 1):i + 2])
    decisions = []
    for r in sorted(pending, key=lambda r: r.d_m):
        if r.d_m in kept:
            why = "the best" if r.d_m == best else f"a neighbour of the best, d_m {best:g},"
            decisions.append(Decision("continue", r.d_m, f"d_m {r.d_m:g} continued: {why} at step {rung}"))
        else:
            decisions.append(Decision("stop", r.d_m, f"d_m {r.d_m:g} stopped at step {rung}: {at_rung[r.d_m]:.4g}, "
                                      f"neither the best (d_m {best:g}, {at_rung[best]:.4g}) nor its neighbour"))
    return decisions


def _refine(candidates: list[float], by_d_m: Mapping[float, TrialReport], settings: SearchSettings) -> SearchStep:
    finished = {d: r.curve[r.last_step] for d, r in by_d_m.items() if not r.stopped}
    if not finished:
        return SearchStep([Decision("done", None, "no allocation finished: every trial was stopped or failed")],
                          None, None, True)
    best = min(finished, key=finished.__getitem__)
    explored = sorted(by_d_m)
    i = explored.index(best)
    low = explored[i - 1] if i > 0 else None
    high = explored[i + 1] if i + 1 < len(explored) else None
    interval = (low if low is not None else 0.0, high if high is not None else float("inf"))
    room = settings.max_trials - len(by_d_m)
    j = candidates.index(best)
    additions: list[Decision] = []
    for side, neighbour, name in (("low", low, "smallest"), ("high", high, "largest")):
        if neighbour is None:
            step = -settings.coarse_stride if side == "low" else settings.coarse_stride
            beyond = int(np.clip(j + step, 0, len(candidates) - 1))
            if beyond != j:
                additions.append(Decision("start", candidates[beyond], f"d_m {candidates[beyond]:g} added: the best "
                                          f"so far, d_m {best:g}, was the {name} explored"))
    if not additions:
        # an optimum on the candidates' first or last value has an open interval
        width = float(np.log(high / low)) if low is not None and high is not None else float("inf")
        if width <= settings.target_width:
            return SearchStep([Decision("done", best, f"d_m {best:g} is the optimum: its interval spans "
                                        f"{width:.2f} in log d_m <= {settings.target_width:g}")], best, interval, True)
        for neighbour in (n for n in (low, high) if n is not None):
            between = [c for c in candidates if min(best, neighbour) < c < max(best, neighbour)]
            if between:
                middle = min(between, key=lambda c: abs(np.log(c) - np.log(np.sqrt(best * neighbour))))
                additions.append(Decision("start", middle, f"d_m {middle:g} added: between the best so far, "
                                          f"d_m {best:g}, and its neighbour d_m {neighbour:g}"))
    if not additions:
        where = ("between it and its explored neighbours" if np.isfinite(width)
                 else "beyond it: it is the candidates' edge, extend them")
        return SearchStep([Decision("done", best, f"d_m {best:g} is the optimum: no candidate is left {where}")],
                          best, interval, True)
    if room < 1:
        return SearchStep([Decision("done", best, f"d_m {best:g} is the best found: the {settings.max_trials} "
                                    f"trials of the budget are spent")], best, interval, True)
    return SearchStep(additions[:room], best, interval)
