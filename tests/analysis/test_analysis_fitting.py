"""The shared fitting discipline (analysis.fitting) piece by piece: losses, intervals, input checks, bounds,
bootstrap and groups, at exact values."""

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from analysis.fitting import (
    Estimate,
    FitError,
    JsonResult,
    bootstrap_refits,
    check_interior,
    check_mode,
    estimates_from,
    finite_rows,
    group_codes,
    group_means,
    huber,
    multistart_lbfgs,
    parameters_at_bounds,
    percentile_interval,
    r_squared,
    safe_log,
    snapshot_hash,
    to_jsonable,
)


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    r = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])

    value, slope = huber(r, delta=1.0)

    assert value.tolist() == [2.5, 0.5, 0.125, 0.0, 0.125, 0.5, 2.5]
    assert slope.tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0]


def test_safe_log_is_the_log_above_the_floor_and_its_tangent_below():
    pred = np.array([-1.0, 0.0, 0.5, 1.0, math.e])

    value, slope = safe_log(pred, floor=1.0)

    assert value.tolist() == pytest.approx([-2.0, -1.0, -0.5, 0.0, 1.0])
    assert slope.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 1 / math.e])


def test_the_interval_holds_the_central_95_percent_and_ignores_failed_resamples():
    samples = np.column_stack([np.arange(1001.0), 2 * np.arange(1001.0)])
    samples[0] = np.nan  # a resample that could not be refitted

    low, high = percentile_interval(samples)

    assert low.tolist() == pytest.approx([25.975, 51.95]) and high.tolist() == pytest.approx([975.025, 1950.05])
    low, high = percentile_interval(np.arange(101.0)[:, None], level=0.5)
    assert (low.tolist(), high.tolist()) == ([25.0], [75.0])


def test_an_estimate_contains_its_bounds_within_a_relative_slack():
    estimate = Estimate(value=2.0, ci_low=1.0, ci_high=3.0)

    assert estimate.contains(1.0) and estimate.contains(3.0) and estimate.contains(2.0)
    assert estimate.contains(3.0 + 1e-9) and not estimate.contains(3.0 + 1e-8)
    assert estimate.contains(1.0 - 1e-9) and not estimate.contains(1.0 - 1e-8)
    assert estimate.contains(3.1, rtol=0.05) and not estimate.contains(3.2, rtol=0.05)
    assert Estimate(0.0, -4.0, -2.0).contains(-1.99, rtol=0.005) and not Estimate(0.0, -4.0, -2.0).contains(-1.9)


def test_estimates_need_half_the_resamples_refitted():
    point = np.array([1.0, 10.0])
    samples = np.array([[0.5, 9.0], [1.5, 11.0]])

    estimates = estimates_from(point, samples, ["a", "b"], "law", n_requested=4)

    assert {name: (e.value, e.ci_low, e.ci_high) for name, e in estimates.items()} == {
        "a": (1.0, pytest.approx(0.525), pytest.approx(1.475)), "b": (10.0, pytest.approx(9.05), pytest.approx(10.95))}
    with pytest.raises(FitError, match=r"^law: only 2 of 5 bootstrap resamples could be refitted; the fit hinges"):
        estimates_from(point, samples, ["a", "b"], "law", n_requested=5)
    with pytest.raises(FitError, match="only 1 of 1 bootstrap"):
        estimates_from(point, samples[:1], ["a", "b"], "law", n_requested=1)  # one resample is no interval


def test_r_squared_weighs_each_point():
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])

    assert r_squared(y, pred) == pytest.approx(1 - 1 / 5)
    assert r_squared(y, pred, weights=np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(1.0)
    assert r_squared(y, pred, weights=np.array([3.0, 1.0, 1.0, 1.0])) == pytest.approx(1 - 1 / 8)


def test_check_mode_and_required_columns_name_what_is_wrong():
    assert check_mode("min") == "min" and check_mode("max") == "max"
    with pytest.raises(FitError, match="^mode must be 'min' or 'max', got 'best'$"):
        check_mode("best")
    frame = pd.DataFrame({"budget": [1.0], "metric": [2.0]})
    with pytest.raises(FitError, match=r"^trials lack column\(s\) \['d_m'\]; have \['budget', 'metric'\]$"):
        finite_rows(frame, ["budget", "d_m"])


def test_finite_rows_skip_missing_infinite_and_non_numeric_values():
    frame = pd.DataFrame({"budget": [1.0, 2.0, 3.0, 4.0, 5.0], "metric": [1.0, np.nan, np.inf, "x", 2.0],
                          "note": [None, "a", "b", "c", None]})

    assert finite_rows(frame, ["budget", "metric"]).index.tolist() == [0, 4]  # None in other columns is fine


def test_the_snapshot_hash_names_the_data_whatever_the_row_order():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "metric": [1.0, np.nan, 3.0], "extra": [1, 2, 3]})
    columns = ["id", "metric", "absent"]

    digest = snapshot_hash(frame, columns)

    assert digest == snapshot_hash(frame.iloc[::-1], columns) == snapshot_hash(frame, ["id", "metric"])
    assert digest == snapshot_hash(frame.assign(extra=0), columns)  # only the named columns count
    assert digest != snapshot_hash(frame.assign(metric=[1.0, np.nan, 3.5]), columns)
    assert digest != snapshot_hash(frame.assign(metric=[1.0, 0.0, 3.0]), columns)  # NaN is not 0
    assert digest != snapshot_hash(frame.head(2), columns)
    assert digest != snapshot_hash(frame.rename(columns={"metric": "value"}), ["id", "value"])  # names count
    assert digest != snapshot_hash(pd.DataFrame({"id": ["ab", "c"], "metric": [1.0, 3.0]}), ["id", "metric"])
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_to_jsonable_gives_plain_values_and_none_for_non_finite():
    value = {1: np.float64(0.5), "a": [np.int64(3), (np.array([1.0, np.inf]), float("nan"))], "s": "x",
             "b": True, "n": None}

    converted = to_jsonable(value)

    assert converted == {"1": 0.5, "a": [3, [[1.0, None], None]], "s": "x", "b": True, "n": None}
    assert type(converted["a"][0]) is int and type(converted["1"]) is float
    json.dumps(converted, allow_nan=False)


def test_a_result_serialises_its_estimates_and_keeps_its_samples_private():
    @dataclass
    class Inner(JsonResult):
        alpha: Estimate

    @dataclass
    class Outer(JsonResult):
        law: str
        exponent: Estimate
        named: dict
        parts: list
        alpha_samples: np.ndarray
        inner: Inner  # a field after a private one is kept

    result = Outer("frontier", Estimate(0.5, 0.4, np.float64(np.inf)), {"a": Estimate(1, 0, 2), "b": 3},
                   [Inner(Estimate(2, 1, 3)), 4], np.zeros(3), Inner(Estimate(5, 4, 6)))

    assert result.to_dict() == {
        "law": "frontier", "exponent": {"value": 0.5, "ci_low": 0.4, "ci_high": None},
        "named": {"a": {"value": 1, "ci_low": 0, "ci_high": 2}, "b": 3},
        "parts": [{"alpha": {"value": 2, "ci_low": 1, "ci_high": 3}}, 4],
        "inner": {"alpha": {"value": 5, "ci_low": 4, "ci_high": 6}},
    }


BOUNDS = [(0.0, 1.0), (-2.0, 2.0), (0.0, 10.0)]


def test_parameters_on_their_bounds_are_named_except_free_lower_ones():
    names = ["a", "b", "c"]

    assert parameters_at_bounds(np.array([0.5, 0.0, 5.0]), BOUNDS, names) == []
    assert parameters_at_bounds(np.array([1.0, -2.0, 0.0]), BOUNDS, names) == ["a", "b", "c"]
    assert parameters_at_bounds(np.array([1 - 2e-7, -2 + 5e-6, 2e-5]), BOUNDS, names) == ["a"]
    assert parameters_at_bounds(np.array([0.5, 2 - 3e-6, 1e-5 - 1e-9]), BOUNDS, names) == ["b", "c"]
    assert parameters_at_bounds(np.array([0.0, 2.0, 0.0]), BOUNDS, names, free_lower=["a", "c"]) == ["b"]
    assert parameters_at_bounds(np.array([1.0, 0.0, 10.0]), BOUNDS, names, free_lower=["a", "c"]) == ["a", "c"]


def test_check_interior_names_the_first_parameter_on_a_bound():
    names = ["a", "b", "c"]

    check_interior(np.array([0.0, 0.0, 5.0]), BOUNDS, names, ["a"], "law")
    with pytest.raises(FitError, match=r"^law: parameter b ran to its bound \(2 in \[-2.0, 2.0\]\); the data do not"):
        check_interior(np.array([0.5, 2.0, 10.0]), BOUNDS, names, [], "law")


def test_bootstrap_refits_resample_trials_with_replacement_and_keep_failures_as_nan():
    seen = []

    def refit(indices):
        seen.append(indices)
        return None if len(seen) == 2 else np.array([indices.mean(), len(indices)])

    samples = bootstrap_refits(4, n_trials=5, seed=7, refit=refit, n_values=2)

    assert samples.shape == (4, 2) and np.isnan(samples[1]).all() and not np.isnan(samples[[0, 2, 3]]).any()
    assert all(len(indices) == 5 and indices.min() >= 0 and indices.max() <= 4 for indices in seen)
    assert any(len(set(indices.tolist())) < 5 for indices in seen)  # with replacement
    assert np.concatenate(seen).min() == 0 and np.concatenate(seen).max() == 4  # every trial can be drawn
    again = bootstrap_refits(4, n_trials=5, seed=7, refit=lambda i: np.array([i.mean(), 0.0]), n_values=2)
    assert again[:, 0].tolist() == [indices.mean() for indices in seen]  # the seed fixes the resamples
    assert bootstrap_refits(1, 5, 7, lambda i: np.array([1.0, 2.0]), 2).tolist() == [[1.0, 2.0]]
    with pytest.raises(FitError, match="^n_bootstrap must be >= 1, got 0$"):
        bootstrap_refits(0, 5, 7, refit, 2)


def test_group_means_average_each_allocation_over_its_trials_or_a_resample():
    codes = np.array([0, 0, 1, 2, 2, 2])
    metric = np.array([1.0, 3.0, 5.0, 1.0, 2.0, 6.0])

    means, counts = group_means(codes, metric, n_groups=4)
    resampled, resampled_counts = group_means(codes, metric, 4, indices=np.array([0, 0, 5]))

    assert means[:3].tolist() == [2.0, 5.0, 3.0] and np.isnan(means[3]) and counts.tolist() == [2, 1, 3, 0]
    assert resampled[[0, 2]].tolist() == [1.0, 6.0] and np.isnan(resampled[1]) and resampled_counts.tolist() == [
        2, 0, 1, 0]


def test_group_codes_number_allocations_in_order_of_first_appearance():
    frame = pd.DataFrame({"d_m": [4, 2, 4, 2, 8], "n": [10, 20, 10, 21, 5]})

    codes, configs = group_codes(frame, ["d_m", "n"])

    assert codes.tolist() == [0, 1, 0, 2, 3] and codes.dtype == np.int64
    assert configs.to_dict("list") == {"d_m": [4, 2, 2, 8], "n": [10, 20, 21, 5]}


def quadratic(theta):
    """(theta - (0.3, -1))² summed, with its gradient: one minimum inside BOUNDS[:2]."""
    diff = theta - np.array([0.3, -1.0])
    return float((diff**2).sum()), 2 * diff


def test_multistart_finds_the_minimum_and_counts_the_starts_that_agree():
    starts = np.array([[0.0, 0.0], [1.0, 2.0], [0.5, -2.0]])

    best = multistart_lbfgs(quadratic, starts, BOUNDS[:2], "bowl")

    assert best.theta.tolist() == pytest.approx([0.3, -1.0], abs=1e-6) and best.loss < 1e-12
    assert (best.n_starts, best.n_converged, best.n_agreeing) == (3, 3, 3)


def test_multistart_fails_when_no_start_converges():
    def nowhere(theta):
        return float("nan"), np.zeros_like(theta)

    with pytest.raises(FitError, match="^bowl: none of 2 L-BFGS starts converged$"):
        multistart_lbfgs(nowhere, np.zeros((2, 2)), BOUNDS[:2], "bowl")
