"""The trainer: schedules, regularisers, falling loss, checkpoint/resume equivalence and the divergence path."""

import math

import pytest
import torch
import torch.nn.functional as F

from elm_core.train import (
    TrainConfig,
    Trainer,
    TrainingDiverged,
    learning_rate,
    regularisers,
    reported_metrics,
    reset_probability,
    train,
)

TINY_MODEL = dict(n_hidden=24, d_m=3, d_tree=4, d_branch=4, rho_rec=0.5, tau_m_min=1.0, tau_m_max=30.0)


def tiny_lm(**changes) -> TrainConfig:
    values = dict(task="pystdlib", task_options={"max_bytes": 300_000}, model=TINY_MODEL, steps=40,
                  lr=1e-2, warmup_steps=5, batch_size=8, seq_len=20, eval_every=20, eval_batches=5, test_batches=5,
                  report_every=10, reset_decay_steps=20)
    values.update(changes)
    return TrainConfig(**values)


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, steps=110)
    assert learning_rate(0, cfg) == pytest.approx(1e-4)
    assert learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg) == pytest.approx(5e-4)
    assert learning_rate(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert all(learning_rate(s, cfg) >= learning_rate(s + 1, cfg) for s in range(10, 110))


def test_reset_probability_decays_from_one_to_the_floor():
    cfg = TrainConfig(reset_prob_floor=0.01, reset_decay_steps=400)
    assert reset_probability(0, cfg) == pytest.approx(1.0)
    assert reset_probability(200, cfg) == pytest.approx(0.505)
    assert reset_probability(400, cfg) == pytest.approx(0.01)
    assert reset_probability(10_000, cfg) == pytest.approx(0.01)


def test_regularisers_follow_design_formulas():
    cfg = TrainConfig(reg_mlp=0.5, reg_activity=2.0)
    value = regularisers(torch.tensor([1.0, 3.0]), torch.tensor(0.25), cfg)
    assert value.item() == pytest.approx(0.5 * (1 + 9) / 2 + 2.0 * 0.25)


def test_training_lowers_validation_bits_per_character():
    reports = []
    trainer = Trainer(tiny_lm(steps=60))
    untrained = trainer.evaluate("valid", 5)
    final = trainer.run(lambda step, metrics: reports.append((step, metrics)))
    valid = [m["valid_bpc"] for _, m in reports if "valid_bpc" in m]
    assert len(valid) == 3
    assert valid[-1] < valid[0] < untrained - 1.0
    assert math.isfinite(final["test_bpc"])
    assert {"train_loss", "tokens_per_s", "step_time", "lr"} <= set(reports[0][1])
    # What a sweep may name as its metric is exactly what a trial reports, final test value included.
    assert set().union(*(metrics for _, metrics in reports)) == set(reported_metrics("pystdlib"))
    assert reports[-1][1] == final


def test_classification_reports_accuracy_and_uses_last_step():
    cfg = TrainConfig(task="synthetic_adding", task_options={"n_train": 200, "n_test": 40, "steps_per_digit": 8},
                      model=TINY_MODEL | {"embedding_scale": 1.0}, optimizer="adamax", steps=10, eval_every=10,
                      eval_batches=3, batch_size=8, seq_len=16, warmup_steps=2)
    reports = []
    final = train(cfg, lambda step, metrics: reports.append(metrics))
    assert 0.0 <= final["test_accuracy"] <= 1.0
    assert final["best_valid_accuracy"] is not None
    assert set().union(*reports) == set(reported_metrics("synthetic_adding"))

    # Loss and accuracy read the logits of the last time step only (the answer comes after the whole sequence).
    trainer = Trainer(cfg)
    trainer.model.eval()
    batches = list(trainer.task.eval_batches("test", cfg.batch_size, cfg.seq_len, None))
    with torch.no_grad():
        last = [(trainer.model(batch.inputs).logits[:, -1], batch.targets) for batch in batches]
        loss, _, _ = trainer._loss(batches[0], None, 0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(*last[0]).item(), rel=1e-6)
    correct = sum((logits.argmax(-1) == targets).sum().item() for logits, targets in last)
    assert trainer.evaluate("test", None) == correct / sum(len(targets) for _, targets in last)


def test_reported_metrics_need_no_data_and_know_which_way_is_better():
    lm, spikes = reported_metrics("enwik8"), reported_metrics("shd_adding")  # reads no data: neither need be on disk
    assert (lm["test_bpc"], lm["best_valid_bpc"], lm["train_bpc"], lm["lr"]) == ("min", "min", "min", None)
    assert (spikes["test_accuracy"], spikes["valid_accuracy"]) == ("max", "max")
    assert "test_accuracy" not in lm and "train_bpc" not in spikes and "test_bpc" not in spikes


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    cfg = tiny_lm(checkpoint_every=10)
    straight = train(cfg)

    class Interrupt(Exception):
        pass

    def stop_at_25(step, metrics):
        if step >= 25:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, stop_at_25, checkpoint_dir=tmp_path)
    resumed_reports = []
    resumed = train(cfg, lambda s, m: resumed_reports.append(s), checkpoint_dir=tmp_path)
    # Reports up to the step-30 checkpoint are replayed (a crashed sink may have lost them), then training goes on.
    assert resumed_reports == [10, 20, 30, 40, 40]  # 40 twice: the last window, then the final test
    assert (resumed["test_bpc"], resumed["best_valid_bpc"]) == (straight["test_bpc"], straight["best_valid_bpc"])


def test_a_run_paused_at_a_step_resumes_there_and_ends_as_an_uninterrupted_one(tmp_path):
    cfg = tiny_lm()  # checkpoints only at evaluations (every 20 steps): the pause writes its own at step 30
    straight = train(cfg)
    paused_reports = []
    assert train(cfg, lambda s, m: paused_reports.append(s), checkpoint_dir=tmp_path, until=30) == {}
    assert paused_reports == [10, 20, 30]  # no final test report: the trial is not finished
    resumed_reports = []
    resumed = train(cfg, lambda s, m: resumed_reports.append(s), checkpoint_dir=tmp_path)
    assert resumed_reports == [10, 20, 30, 40, 40]
    assert (resumed["test_bpc"], resumed["best_valid_bpc"]) == (straight["test_bpc"], straight["best_valid_bpc"])


def test_resume_with_dropout_is_also_exact(tmp_path):
    cfg = tiny_lm(steps=20, checkpoint_every=10, model=TINY_MODEL | {"input_dropout": 0.2, "recurrent_dropout": 0.2})
    straight = train(cfg)
    first = Trainer(cfg, tmp_path)
    batches = first.task.train_batches(cfg.batch_size, cfg.seq_len, cfg.seed)
    for _ in range(10):
        first.train_step(next(batches))
        first.step += 1
    first.save_checkpoint()
    assert train(cfg, checkpoint_dir=tmp_path)["test_bpc"] == straight["test_bpc"]  # the same dropout masks


def test_non_finite_loss_ends_the_trial_with_a_reason():
    trainer = Trainer(tiny_lm())
    with torch.no_grad():
        trainer.model.output.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite loss .* at step 0"):
        trainer.run()


def test_exploding_gradient_ends_the_trial():
    trainer = Trainer(tiny_lm(max_grad_norm=1e-6))
    with pytest.raises(TrainingDiverged, match="gradient norm"):
        trainer.run()


def test_unknown_train_setting_is_named():
    with pytest.raises(ValueError, match="no field 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1.0})
