"""Recorded predictions: created once per data snapshot, scored when trials at their budget finish in a sweep of
the same task and settings (never another), idempotently, and kept across restarts; both backends."""

from __future__ import annotations

import dataclasses

import pytest
from store_helpers import (
    EXPERIMENT,
    PREDICTION_BUDGETS,
    experiment_spec,
    ingest_synthetic,
    synthetic_rows,
    synthetic_trials,
)

from analysis import predict_optimum, score_prediction
from resultsdb import CONFIG_COLUMNS, METRIC_COLUMN, NotFound, ResultsStore, UnknownMetric

BUDGET = PREDICTION_BUDGETS[-1]  # predicted from the four below it


@pytest.fixture(scope="module")
def trials():
    return synthetic_trials()


@pytest.fixture(scope="module")
def prediction(trials) -> dict:
    """What the allocation and frontier laws predict at BUDGET from the trials below it."""
    return predict_optimum(trials, "metric", "min", BUDGET, n_bootstrap=100).to_dict()


@pytest.fixture
def base(store: ResultsStore, trials) -> str:
    """The sweep the prediction is made from: the trials below BUDGET."""
    ingest_synthetic(store, "base", trials[trials["budget"] < BUDGET])
    return "base"


def at_budget(trials, seeds=(0, 1, 2)):
    return trials[(trials["budget"] == BUDGET) & trials["seed"].isin(seeds)]


def test_a_prediction_is_recorded_with_its_intervals_law_and_data_snapshot(store, base, prediction):
    recorded, created = store.create_prediction(base, prediction)

    assert created
    assert (recorded.sweep, recorded.task, recorded.metric, recorded.mode, recorded.budget) == (
        "base", "enwik8", "bpc", "min", BUDGET)
    assert recorded.predicted.law == "allocation+frontier" and recorded.n_bootstrap == 100
    for name in ("d_m", "n_hidden", "k_e", "metric"):
        assert dataclasses.asdict(getattr(recorded.predicted, name)) == prediction[name]
    assert (recorded.snapshot_hash, recorded.snapshot_trials) == (prediction["snapshot_hash"], prediction["n_trials"])
    assert recorded.snapshot_budgets == list(PREDICTION_BUDGETS[:-1])
    assert recorded.experiment == {"task_options": EXPERIMENT["task_options"], "fixed": EXPERIMENT["fixed"],
                                   "varied": ["d_m"], "training": EXPERIMENT["training"]}
    assert recorded.score is None
    assert store.list_predictions() == [recorded]
    assert [event.kind for event in store.events_since(sweep=base)][-1] == "prediction_recorded"


def test_predicting_again_from_the_same_snapshot_returns_the_recorded_prediction(store, base):
    frame, _, mode = store.metric_frame(base)
    made = [predict_optimum(frame, METRIC_COLUMN, mode, BUDGET, config_columns=list(CONFIG_COLUMNS), n_bootstrap=50)
            for _ in range(2)]

    first, created = store.create_prediction(base, made[0].to_dict())
    again, created_again = store.create_prediction(base, made[1].to_dict())

    assert (created, created_again) == (True, False)
    assert again == first and len(store.list_predictions()) == 1
    assert first.snapshot_trials == len(frame)


def test_a_new_snapshot_or_law_is_a_new_prediction(store, base, prediction):
    first, _ = store.create_prediction(base, prediction)
    other_law, created = store.create_prediction(base, {**prediction, "law": "surface"})
    newer, created_newer = store.create_prediction(base, {**prediction, "snapshot_hash": "f" * 64})

    assert created and created_newer
    assert len({first.id, other_law.id, newer.id}) == 3


def test_a_prediction_is_scored_once_the_trials_at_its_budget_in_a_sweep_of_its_experiment_finish(
        store, base, prediction, trials):
    recorded, _ = store.create_prediction(base, prediction)
    store.create_sweep("next", task="enwik8", metric="bpc", mode="min", spec_text=experiment_spec("next"))
    planned = synthetic_rows(at_budget(trials))
    ids = store.add_trials("next", planned)

    assert store.score_predictions(score_prediction)[0].score is None  # every trial there still to run
    for trial_id, row in zip(ids[:-1], planned[:-1]):
        store.set_trial_status(trial_id, "completed", final=row["final"])
    assert store.score_predictions(score_prediction)[0].score is None  # one still running
    store.set_trial_status(ids[-1], "completed", final=planned[-1]["final"])

    (scored,) = store.score_predictions(score_prediction)

    observed = store.metric_frame("next").trials
    expected = score_prediction("min", recorded.predicted.d_m, recorded.predicted.metric, observed)
    score = scored.score
    assert score is not None and score.sweeps == ["next"]
    assert {"observed": score.observed, "d_m_inside": score.d_m_inside, "metric_inside": score.metric_inside,
            "metric_error": score.metric_error, "regret": score.regret} == expected
    assert score.observed["n_trials"] == len(planned) and score.regret >= 0
    # the allocation law's d_m*(P) = 4·(P/1e4)^0.3 gives 16 at this budget: predicted and observed near it
    assert score.observed["d_m"]["value"] == pytest.approx(16, rel=0.1)
    assert recorded.predicted.d_m.value == pytest.approx(16, rel=0.1)
    assert score.d_m_inside == (recorded.predicted.d_m.ci_low <= score.observed["d_m"]["value"]
                                <= recorded.predicted.d_m.ci_high)
    assert score.metric_error == pytest.approx(recorded.predicted.metric.value - score.observed["metric"]["value"])


def test_scoring_the_same_trials_again_changes_nothing_and_more_trials_update_the_score(
        store, base, prediction, trials):
    store.create_prediction(base, prediction)
    ingest_synthetic(store, "next", at_budget(trials, seeds=(0, 1)))
    (first,) = store.score_predictions(score_prediction)

    (again,) = store.score_predictions(score_prediction)
    assert again == first  # scored_at included: not rewritten

    ingest_synthetic(store, "next", at_budget(trials, seeds=(2,)))
    (updated,) = store.score_predictions(score_prediction)
    assert updated.id == first.id and len(store.list_predictions()) == 1
    assert (first.score.observed["n_trials"], updated.score.observed["n_trials"]) == (
        len(at_budget(trials, seeds=(0, 1))), len(at_budget(trials)))
    assert updated.score.scored_at > first.score.scored_at


def test_predictions_and_their_scores_are_kept_across_a_restart(migrated_db_url, base, store, prediction, trials):
    store.create_prediction(base, prediction)
    store.create_prediction(base, {**prediction, "budget": 3_000_000})
    ingest_synthetic(store, "next", at_budget(trials))
    before = store.score_predictions(score_prediction)
    store.close()

    with ResultsStore(migrated_db_url) as restarted:
        assert restarted.list_predictions() == before
        assert restarted.score_predictions(score_prediction) == before
    assert [p.score is not None for p in before] == [True, False]


@pytest.mark.parametrize("other", [
    {"task": "shd_adding"},
    {"spec_text": experiment_spec("other", fixed={"d_tree": 20, "d_branch": 10})},
    {"spec_text": experiment_spec("other", training={"steps": 2000, "lr": 0.005})},
    {"spec_text": experiment_spec("other", task_options={"corpus_bytes": 80_000})},
    {"spec_text": '{"source": "ingest", "name": "other", "task": "enwik8", "metric": "bpc", "mode": "min"}'},
], ids=["another task", "other fixed axes", "other training", "other task options", "ingested"])
def test_a_prediction_is_never_scored_against_a_sweep_of_another_task_or_other_settings(
        store, base, prediction, trials, other):
    store.create_prediction(base, prediction)
    ingest_synthetic(store, "other", at_budget(trials), **other)

    assert store.score_predictions(score_prediction)[0].score is None

    ingest_synthetic(store, "same", at_budget(trials))
    (scored,) = store.score_predictions(score_prediction)
    assert scored.score.sweeps == ["same"] and scored.score.observed["n_trials"] == len(at_budget(trials))


def test_its_own_sweep_scores_it_once_trials_at_the_budget_finish_there(store, trials):
    ingest_synthetic(store, "whole", trials)  # fitted below BUDGET, scored at it
    frame, _, mode = store.metric_frame("whole")
    made = predict_optimum(frame, METRIC_COLUMN, mode, BUDGET, config_columns=list(CONFIG_COLUMNS), n_bootstrap=50)
    assert made.budgets == [float(b) for b in PREDICTION_BUDGETS[:-1]]
    store.create_prediction("whole", made.to_dict())

    (scored,) = store.score_predictions(score_prediction, sweep="whole")

    assert scored.score.sweeps == ["whole"] and scored.score.observed["n_trials"] == len(at_budget(trials))


def test_predictions_of_a_sweep_are_those_made_from_it_or_scored_against_it(store, base, prediction, trials):
    store.create_prediction(base, prediction)
    ingest_synthetic(store, "next", at_budget(trials))
    ingest_synthetic(store, "unrelated", at_budget(trials), task="shd_adding")

    assert store.list_predictions("next") == []  # not scored yet
    assert [p.sweep for p in store.score_predictions(score_prediction, sweep="next")] == ["base"]
    assert [p.sweep for p in store.list_predictions("next")] == ["base"]
    assert store.list_predictions("unrelated") == []
    with pytest.raises(NotFound):
        store.list_predictions("nope")


def test_a_prediction_must_name_a_sweep_a_metric_it_has_and_finite_intervals(store, base, prediction):
    with pytest.raises(NotFound):
        store.create_prediction("nope", prediction)
    with pytest.raises(UnknownMetric):
        store.create_prediction(base, prediction, metric="accuracy")
    with pytest.raises(ValueError, match="d_m"):
        store.create_prediction(base, {**prediction, "d_m": {"value": 3.0, "ci_low": float("-inf"), "ci_high": 4.0}})
    with pytest.raises(ValueError, match="snapshot_hash"):
        store.create_prediction(base, {key: value for key, value in prediction.items() if key != "snapshot_hash"})
    assert store.list_predictions() == []
