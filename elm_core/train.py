"""Train one trial the paper's way (DESIGN §4): truncated BPTT, warm-up + cosine, clipping, regularisers.

`train(trial_config, report)` is the whole public surface, with `reported_metrics(task)` naming what it reports.
It knows nothing of Ray or databases: the caller passes a `report(step, metrics)` callable and, optionally, a
checkpoint directory to save to and resume from.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from .data import Batch, Task, load_task, task_type
from .model import ELMConfig, ELMNetwork, ELMState, strict_from_dict

Report = Callable[[int, dict], None]
Mode = Literal["min", "max"]
CHECKPOINT_FILE = "trainer.pt"

# The names a trial reports, each with the direction in which it improves (None: neither); `reported_metrics`
# lists them per task, and a test checks a real run reports exactly those.
WINDOW_METRICS: dict[str, Mode | None] = {  # means over each report window of training steps
    "train_loss": "min", "lr": None, "step_time": "min", "tokens_per_s": "max", "grad_norm": None,
}
LM_WINDOW_METRICS: dict[str, Mode | None] = {"train_bpc": "min"}
# The model's size is not reported: it is fixed for a trial and recorded with its allocation when it is planned.


def task_metric_name(prefix: Literal["valid", "best_valid", "test"], task: type[Task] | Task) -> str:
    """The name the task's own metric is reported under: valid_bpc, best_valid_accuracy, test_bpc, ..."""
    return f"{prefix}_{task.metric}"


def reported_metrics(task: str) -> dict[str, Mode | None]:
    """Every metric a trial of task `task` reports, with the direction in which it improves (None: neither).

    Reads no data, so a sweep's metric can be checked when it is planned; DatasetError for an unknown task.
    """
    kind = task_type(task)
    evaluated = {task_metric_name(prefix, kind): kind.metric_mode for prefix in ("valid", "best_valid", "test")}
    window = WINDOW_METRICS | (LM_WINDOW_METRICS if kind.kind == "lm" else {})
    return window | evaluated


@dataclass
class TrainConfig:
    """Every trainer knob; defaults follow the Enwik8 recipe except the run length."""

    task: str = "pystdlib"
    task_options: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # ELMConfig fields; n_input/n_output come from the task
    optimizer: Literal["adam", "adamax"] = "adam"
    lr: float = 5e-4
    warmup_steps: int = 100
    steps: int = 1000
    batch_size: int = 8
    seq_len: int = 100
    grad_clip: float = 1.0
    label_smoothing: float = 1e-4
    reset_prob_floor: float = 0.01
    reset_decay_steps: int = 40_000
    reg_mlp: float = 0.01
    reg_activity: float = 1.0
    eval_every: int = 200
    eval_batches: int = 200
    test_batches: int | None = None  # None: the whole test split
    report_every: int = 50
    checkpoint_every: int = 0  # 0: only at evaluations when a checkpoint directory is given
    max_grad_norm: float = 1e4  # a pre-clip gradient norm above this ends the trial as diverged
    device: str = "auto"
    bf16: bool = False
    seed: int = 0  # model init, wiring, dropout, batch order
    data_seed: int = 0  # the split and the fixed valid/test examples: shared by all seeds of a sweep

    def __post_init__(self) -> None:
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"TrainConfig.{f.name} must be a number, got {value!r}")
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"TrainConfig.{f.name} must be true or false, got {value!r}")
        if self.optimizer not in ("adam", "adamax"):
            raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'adamax', got {self.optimizer!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches", "report_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.reset_prob_floor <= 1:
            raise ValueError(f"TrainConfig.reset_prob_floor must lie in [0, 1], got {self.reset_prob_floor!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return strict_from_dict(cls, values)

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became non-finite or exploded; the trial cannot continue."""


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to 0 at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def reset_probability(step: int, cfg: TrainConfig) -> float:
    """Chance that a stream's carried state is reset: cosine from 1 down to the floor over reset_decay_steps."""
    if cfg.reset_decay_steps <= 0 or step >= cfg.reset_decay_steps:
        return cfg.reset_prob_floor
    cosine = 0.5 * (1.0 + math.cos(math.pi * step / cfg.reset_decay_steps))
    return cfg.reset_prob_floor + (1.0 - cfg.reset_prob_floor) * cosine


def regularisers(mlp_out_abs: torch.Tensor, activity: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """(mean |MLP output|)^2 averaged over neurons, plus mean hidden activity (an L1 penalty: a >= 0)."""
    return cfg.reg_mlp * mlp_out_abs.square().mean() + cfg.reg_activity * activity


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: TrainConfig, checkpoint_dir: str | Path | None = None):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        torch.manual_seed(cfg.seed)
        self.task: Task = load_task(cfg.task, cfg.task_options, seed=cfg.data_seed)
        model_fields = {"seed": cfg.seed, **cfg.model, "n_input": self.task.n_input, "n_output": self.task.n_output}
        self.model_cfg = ELMConfig.from_dict(model_fields)
        self.model = ELMNetwork(self.model_cfg).to(self.device)
        optimizer = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.Adamax
        self.optimizer = optimizer(self.model.parameters(), lr=cfg.lr)
        self.reset_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.state: ELMState | None = None
        self.best_valid: float | None = None
        self.best_weights: dict | None = None
        self.history: list[tuple[int, dict]] = []

    @property
    def is_lm(self) -> bool:
        return self.task.kind == "lm"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def _loss(self, batch: Batch, state: ELMState | None, smoothing: float):
        inputs, targets = batch.inputs.to(self.device), batch.targets.to(self.device)
        with self._autocast():
            out = self.model(inputs, state)
        logits = out.logits.float()
        if self.is_lm:
            flat = logits.reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(flat, targets.reshape(-1), label_smoothing=smoothing)
            correct = None
        else:
            last = logits[:, -1]
            loss = F.cross_entropy(last, targets, label_smoothing=smoothing)
            correct = (last.argmax(-1) == targets).sum().item()
        return loss, out, correct

    def _carried_state(self, batch: Batch) -> ELMState | None:
        """Truncated BPTT: carry each stream's state unless this stream is reset (with a decaying probability)."""
        if not self.is_lm or self.state is None or not batch.continues:
            return None
        keep = torch.rand(batch.inputs.shape[0], generator=self.reset_rng) >= reset_probability(self.step, self.cfg)
        return self.state.reset(keep.to(self.device))

    def train_step(self, batch: Batch) -> dict:
        cfg = self.cfg
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        started = time.perf_counter()
        loss, out, _ = self._loss(batch, self._carried_state(batch), cfg.label_smoothing)
        total = loss + regularisers(out.mlp_out_abs, out.activity, cfg)
        if not torch.isfinite(total):
            raise TrainingDiverged(f"non-finite loss ({total.item()}) at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip).item()
        if not math.isfinite(grad_norm) or grad_norm > cfg.max_grad_norm:
            raise TrainingDiverged(f"gradient norm {grad_norm:.3g} at step {self.step} (limit {cfg.max_grad_norm:g})")
        self.optimizer.step()
        self.state = out.state.detach() if self.is_lm else None
        elapsed = time.perf_counter() - started
        tokens = batch.inputs.shape[0] * batch.inputs.shape[1]
        metrics = {"train_loss": loss.item(), "lr": lr, "step_time": elapsed, "tokens_per_s": tokens / elapsed,
                   "grad_norm": grad_norm}
        if self.is_lm:
            metrics["train_bpc"] = loss.item() / math.log(2)
        return metrics

    @torch.no_grad()
    def evaluate(self, split: str, max_batches: int | None) -> float:
        """Bits per character (state carried across consecutive chunks) or accuracy on a split."""
        self.model.eval()
        state, total_loss, total_count, correct = None, 0.0, 0, 0
        for batch in self.task.eval_batches(split, self.cfg.batch_size, self.cfg.seq_len, max_batches):
            loss, out, batch_correct = self._loss(batch, state if batch.continues else None, 0.0)
            if self.is_lm:
                count = batch.targets.numel()
                total_loss += loss.item() * count
                state = out.state
            else:
                count = batch.targets.shape[0]
                correct += batch_correct
            total_count += count
        if total_count == 0:
            raise ValueError(f"the {split} split of task {self.cfg.task!r} yielded no batches")
        return total_loss / total_count / math.log(2) if self.is_lm else correct / total_count

    def _improved(self, value: float) -> bool:
        if self.best_valid is None:
            return True
        return value < self.best_valid if self.task.metric_mode == "min" else value > self.best_valid

    def run(self, report: Report | None = None, until: int | None = None) -> dict:
        """Train to the end and return the final metrics; with `until`, pause after that step instead (its
        checkpoint written) and return {}: a later run resumes there."""
        cfg = self.cfg
        last = cfg.steps if until is None else min(until, cfg.steps)
        self._resume()
        if report:  # re-deliver what was reported before the checkpoint: the sink may have lost it in a crash
            for step, metrics in self.history:
                report(step, metrics)
        batches = self.task.train_batches(cfg.batch_size, cfg.seq_len, cfg.seed, start_step=self.step)
        window: list[dict] = []
        while self.step < last:
            window.append(self.train_step(next(batches)))
            self.step += 1
            metrics: dict = {}
            if self.step % cfg.report_every == 0 or self.step == cfg.steps:
                metrics.update(_window_mean(window))
                window = []
            evaluated = self.step % cfg.eval_every == 0 or self.step == cfg.steps
            if evaluated:
                valid = self.evaluate("valid", cfg.eval_batches)
                metrics[task_metric_name("valid", self.task)] = valid
                if self._improved(valid):
                    self.best_valid = valid
                    self.best_weights = copy.deepcopy(self.model.state_dict())
                metrics[task_metric_name("best_valid", self.task)] = self.best_valid
            if metrics:
                self.history.append((self.step, metrics))
            due = self.step % cfg.checkpoint_every == 0 if cfg.checkpoint_every else evaluated
            if self.checkpoint_dir and (due or self.step == until):
                self.save_checkpoint()  # before reporting: whatever was reported is in the checkpoint's history
            if metrics and report:
                report(self.step, metrics)
        return self.finish(report) if self.step >= cfg.steps else {}

    def finish(self, report: Report | None) -> dict:
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        final = {
            task_metric_name("test", self.task): self.evaluate("test", self.cfg.test_batches),
            task_metric_name("best_valid", self.task): self.best_valid,
        }
        if report:
            report(self.step, final)
        return final

    # --- checkpoints ---------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write atomically: a crash while saving leaves the previous checkpoint intact."""
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state,
            "best_valid": self.best_valid,
            "best_weights": self.best_weights,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "reset_rng": self.reset_rng.get_state(),
            "train_config": self.cfg.to_dict(),
        }
        target = self.checkpoint_dir / CHECKPOINT_FILE
        partial = target.with_suffix(".partial")
        torch.save(payload, partial)
        partial.replace(target)
        return target

    def _resume(self) -> None:
        if not self.checkpoint_dir or not (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return
        payload = torch.load(self.checkpoint_dir / CHECKPOINT_FILE, map_location=self.device, weights_only=False)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = payload["step"]
        self.state = payload["state"]
        self.best_valid = payload["best_valid"]
        self.best_weights = payload["best_weights"]
        self.history = payload["history"]
        torch.set_rng_state(payload["torch_rng"])
        self.reset_rng.set_state(payload["reset_rng"])


def _window_mean(window: list[dict]) -> dict:
    keys = window[0].keys()
    return {k: sum(m[k] for m in window) / len(window) for k in keys}


def train(trial_config: dict | TrainConfig, report: Report | None = None,
          checkpoint_dir: str | Path | None = None, until: int | None = None) -> dict:
    """Train one trial; call report(step, metrics) at intervals; resume from checkpoint_dir if it holds one.

    With `until`, pause after that step (see Trainer.run)."""
    cfg = trial_config if isinstance(trial_config, TrainConfig) else TrainConfig.from_dict(trial_config)
    return Trainer(cfg, checkpoint_dir).run(report, until)
