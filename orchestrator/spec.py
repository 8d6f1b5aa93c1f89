"""Sweep specs: the YAML a researcher writes, validated into a `SweepSpec` (pydantic).

Every problem becomes one line naming the key path and the value; `load_spec` collects them all into a SpecError.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from elm_core.data import DatasetError
from elm_core.model import ELMConfig
from elm_core.train import TrainConfig, reported_metrics

AXES = ("d_m", "d_mlp", "l_mlp", "d_tree", "d_branch", "rho_rec")
INT_AXES = {"d_m", "d_mlp", "l_mlp", "d_tree", "d_branch"}
# Model fields a spec may fix; n_hidden is solved from the budget, n_input/n_output come from the task.
FIXED_MODEL_FIELDS = set(ELMConfig.__dataclass_fields__) - {"n_hidden", "n_input", "n_output", "seed"}
# Trainer knobs a spec may set; task, model and seed are owned by the sweep itself.
TRAINING_FIELDS = set(TrainConfig.__dataclass_fields__) - {"task", "task_options", "model", "seed"}


class SpecError(ValueError):
    """A spec that cannot run; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(Strict):
    name: str
    mode: Literal["min", "max"]


class AxisRange(Strict):
    """start..stop inclusive with num points, linear or log spaced; integer axes are rounded and deduplicated."""

    start: float
    stop: float
    num: Annotated[int, Field(ge=1)]
    scale: Literal["linear", "log"] = "linear"

    def values(self, integer: bool) -> list[float | int]:
        if self.num == 1:
            points = [self.start]
        elif self.scale == "log":
            if self.start <= 0 or self.stop <= 0:
                raise ValueError("a log range needs start > 0 and stop > 0")
            ratio = (self.stop / self.start) ** (1 / (self.num - 1))
            points = [self.start * ratio**i for i in range(self.num)]
        else:
            step = (self.stop - self.start) / (self.num - 1)
            points = [self.start + step * i for i in range(self.num)]
        if integer:
            return sorted({int(round(p)) for p in points})
        return points


class Allocation(Strict):
    vary: dict[str, list[float] | AxisRange]
    fixed: dict[str, Any] = {}
    rule: Literal["floor", "nearest"] = "floor"
    skip_infeasible: bool = False

    @field_validator("vary")
    @classmethod
    def known_axes(cls, vary: dict) -> dict:
        for axis, values in vary.items():
            if axis not in AXES:
                raise ValueError(f"unknown axis {axis!r} (axes: {', '.join(AXES)})")
            if isinstance(values, list) and not values:
                raise ValueError(f"axis {axis!r} has no values")
        if not vary:
            raise ValueError("at least one axis must vary")
        return vary

    @field_validator("fixed")
    @classmethod
    def known_fields(cls, fixed: dict) -> dict:
        for key in fixed:
            if key not in FIXED_MODEL_FIELDS:
                raise ValueError(f"unknown model setting {key!r}")
        return fixed

    def axis_values(self) -> dict[str, list]:
        out = {}
        for axis, values in self.vary.items():
            integer = axis in INT_AXES
            if isinstance(values, AxisRange):
                out[axis] = values.values(integer)
            else:
                out[axis] = [int(v) if integer and float(v).is_integer() else v for v in values]
        return out


class Scheduler(Strict):
    type: Literal["none", "asha"] = "none"
    metric: str | None = None  # defaults to the validation metric the trainer reports
    grace_period: Annotated[int, Field(ge=1)] = 100
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0


class Search(Strict):
    """How a sweep picks its allocations: the full grid, or an adaptive search along d_m per budget
    (analysis.search: a coarse grid around the predicted optimum, refined until the interval is narrow)."""

    type: Literal["grid", "adaptive"] = "grid"
    coarse_size: Annotated[int, Field(ge=2)] = 3
    coarse_stride: Annotated[int, Field(ge=1)] = 1
    rung_fraction: Annotated[float, Field(gt=0, le=1)] = 0.25
    target_width: Annotated[float, Field(gt=0)] = 0.75
    max_trials: Annotated[int, Field(ge=1)] = 8  # per budget


class Resources(Strict):
    cpu: Annotated[float, Field(gt=0)] = 1.0
    gpu: Annotated[float, Field(ge=0)] = 0.0


class SweepSpec(Strict):
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")]
    task: str
    task_options: dict[str, Any] = {}
    metric: Metric
    budgets: list[float]
    allocation: Allocation
    seeds: list[int] = [0]
    training: dict[str, Any] = {}
    scheduler: Scheduler = Scheduler()
    search: Search = Search()
    resources: Resources = Resources()
    max_failures: Annotated[int, Field(ge=0)] = 1
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    description: str = ""

    @field_validator("budgets", mode="before")
    @classmethod
    def parse_budgets(cls, budgets: Any) -> Any:
        if isinstance(budgets, list):
            return [float(b) if isinstance(b, str) else b for b in budgets]  # YAML reads 1e5 as a string
        return budgets

    @field_validator("budgets")
    @classmethod
    def positive_budgets(cls, budgets: list[float]) -> list[float]:
        if not budgets:
            raise ValueError("at least one budget is needed")
        for b in budgets:
            if not (math.isfinite(b) and b >= 1):
                raise ValueError(f"budget {b!r} must be a finite number >= 1")
        return sorted(set(budgets))

    @field_validator("seeds")
    @classmethod
    def some_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("at least one seed is needed")
        return sorted(set(seeds))

    @field_validator("training")
    @classmethod
    def known_training(cls, training: dict) -> dict:
        for key in training:
            if key not in TRAINING_FIELDS:
                raise ValueError(f"unknown training setting {key!r}")
        TrainConfig(**training)  # raises ValueError naming the field and value
        return training

    @model_validator(mode="after")
    def searchable(self) -> SweepSpec:
        if self.search.type != "adaptive":
            return self
        axes = list(self.allocation.vary)
        if axes != ["d_m"]:
            raise ValueError(f"search: an adaptive search varies d_m only (allocation.vary has {', '.join(axes)})")
        if len(self.seeds) != 1:
            raise ValueError("search: an adaptive search spends its trials on allocations, not repeats: give one seed")
        if self.scheduler.type != "none":
            raise ValueError("search: an adaptive search stops its own trials: remove the scheduler")
        return self

    @property
    def valid_metric(self) -> str:
        return self.scheduler.metric or self.metric.name.replace("test_", "valid_", 1)

    def metric_problems(self) -> list[str]:
        """A metric the task does not report, or a mode that ranks it backwards: one line each, from no data."""
        try:
            reported = reported_metrics(self.task)
        except DatasetError:
            return []  # an unknown task is named when the sweep is planned
        problems = []
        for key, name in (("metric.name", self.metric.name), ("scheduler.metric", self.scheduler.metric)):
            if name is None:
                continue
            if name not in reported:
                problems.append(f"{key}: {name!r} is not reported by task {self.task!r} "
                                f"(it reports: {', '.join(sorted(reported))})")
                continue
            direction, mode = reported[name], self.metric.mode
            better = "lower" if direction == "min" else "higher"
            if direction not in (None, mode) and key == "metric.name":
                problems.append(f"metric.mode: {mode!r} ranks {name!r} backwards "
                                f"({better} is better: use mode {direction!r})")
            elif direction not in (None, mode):
                problems.append(f"scheduler.metric: {name!r} is better {better}, "
                                f"but the scheduler ranks it by metric.mode {mode!r}")
        return problems


def parse_spec(text: str, source: str = "<spec>") -> SweepSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError([f"{source}:{where} not valid YAML ({getattr(error, 'problem', error)})"]) from None
    if not isinstance(raw, dict):
        raise SpecError([f"{source}: a sweep spec is a mapping of keys, got {type(raw).__name__}"])
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError([_describe(source, e) for e in error.errors()]) from None
    if problems := spec.metric_problems():
        raise SpecError([f"{source}: {problem}" for problem in problems])
    return spec


def changed_keys(old: SweepSpec, new: SweepSpec) -> list[str]:
    """The keys whose values differ, a mapping's keys named one level down ("budgets", "training.steps")."""
    before, after = old.model_dump(), new.model_dump()
    changed = []
    for key in before:
        if before[key] == after[key]:
            continue
        if isinstance(before[key], dict) and isinstance(after[key], dict):
            inner = [*before[key], *(k for k in after[key] if k not in before[key])]
            changed += [f"{key}.{k}" for k in inner if before[key].get(k) != after[key].get(k)]
        else:
            changed.append(key)
    return changed


def load_spec(path: str | Path) -> tuple[SweepSpec, str]:
    """The validated spec and its text as submitted."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError([f"{path}: cannot read the spec ({error.strerror})"]) from None
    return parse_spec(text, str(path)), text


def _describe(source: str, error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
        message = f"{message} (got {error['input']!r})"
    if not location and error["type"] == "value_error":
        return f"{source}: {message}"  # a check across keys names its keys itself
    return f"{source}: {location or '(top level)'}: {message}"
