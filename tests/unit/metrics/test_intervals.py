"""95 % intervals of the aggregates (docs/methods.md, "Intervals and decisions"): coverage, test vectors, and
the decisions taken by interval."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.checks.aggregation import measure
from pytest_saliency.checks.outcome import Measurement, Outcome
from pytest_saliency.metrics.intervals import (
    bootstrap_means,
    mean_interval,
    percentile_bounds,
    quantile_interval,
    student_t_quantile,
    wilson_interval,
)
from pytest_saliency.spec.schema import Threshold

REPETITIONS = 1000


def covered(lower: torch.Tensor, upper: torch.Tensor, truth: float) -> float:
    return float(((lower <= truth) & (truth <= upper)).double().mean())


# --- coverage: 1,000 seeded experiments, each interval must hold the true value ~95 % of the time


def test_the_mean_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    generator = torch.Generator().manual_seed(1)
    samples = 2.0 * torch.randn(REPETITIONS, 60, generator=generator, dtype=torch.float64) + 1.0  # N(1, 2^2)
    lower, upper = mean_interval(samples)
    assert lower.shape == upper.shape == (REPETITIONS,)
    assert 0.93 <= covered(lower, upper, 1.0) <= 0.97


def test_the_percentile_interval_covers_the_true_percentile_95_percent_of_the_time() -> None:
    generator = torch.Generator().manual_seed(2)
    samples = torch.empty(REPETITIONS, 100, dtype=torch.float64).exponential_(generator=generator)
    truth = -math.log(1 - 0.1)  # the 10th percentile of Exp(1)
    lower, upper = quantile_interval(samples, 0.1, generator=generator, resamples=500)
    assert 0.93 <= covered(lower, upper, truth) <= 0.97


def test_the_fraction_interval_covers_the_true_fraction_95_percent_of_the_time() -> None:
    generator = torch.Generator().manual_seed(3)
    successes = (torch.rand(REPETITIONS, 200, generator=generator) < 0.3).sum(dim=1)
    lower, upper = wilson_interval(successes, torch.tensor(200))
    assert 0.93 <= covered(lower, upper, 0.3) <= 0.97


# --- test vectors and properties


@pytest.mark.parametrize(
    ("df", "expected", "tolerance"),
    [(1, 12.706205, 1e-5), (2, 4.302653, 1e-5), (3, 3.182446, 5e-3), (10, 2.228139, 1e-4), (100, 1.983972, 1e-6)],
)
def test_t_quantiles_match_the_tables(df: int, expected: float, tolerance: float) -> None:
    # scipy.stats.t.ppf(0.975, df)
    assert float(student_t_quantile(0.975, torch.tensor(float(df)))) == pytest.approx(expected, abs=tolerance)


def test_wilson_matches_a_worked_example_and_is_not_empty_at_zero() -> None:
    # 0 of 256: [0, 0.01475] (Wilson 1927, z = 1.96); 13 of 100: [0.0776, 0.2098]
    lower, upper = wilson_interval(torch.tensor([0, 13]), torch.tensor([256, 100]))
    assert lower.tolist() == pytest.approx([0.0, 0.07765], abs=1e-4)
    assert upper.tolist() == pytest.approx([0.01475, 0.20979], abs=1e-4)
    nothing = wilson_interval(torch.tensor(0), torch.tensor(0))
    assert math.isnan(float(nothing[0])) and math.isnan(float(nothing[1]))


def test_the_mean_interval_is_mean_plus_minus_t_times_the_standard_error() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    lower, upper = mean_interval(values)
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert (float(lower), float(upper)) == pytest.approx((3 - half, 3 + half), abs=1e-3)
    single = mean_interval(torch.tensor([1.0]))
    assert math.isnan(float(single[0]))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=40), st.sampled_from([0.1, 0.5, 0.9]), st.integers(0, 99))
def test_a_percentile_interval_lies_within_the_samples_and_is_seeded(values: list[float], q: float, seed: int) -> None:
    data = torch.tensor(values, dtype=torch.float64)
    first = quantile_interval(data, q, generator=torch.Generator().manual_seed(seed), resamples=200)
    again = quantile_interval(data, q, generator=torch.Generator().manual_seed(seed), resamples=200)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert data.min() - 1e-12 <= first[0] <= first[1] <= data.max() + 1e-12


def test_resampled_quantiles_read_from_counts_equal_sorting_each_resample() -> None:
    """The count trick gives torch.quantile of each resample: checked through the bounds of a
    bootstrap computed both ways from the same draws."""
    data = torch.tensor([0.3, 1.5, -2.0, 4.0, 0.0, 2.2, 7.5], dtype=torch.float64)
    lower, upper = quantile_interval(data, 0.25, generator=torch.Generator().manual_seed(5), resamples=300)
    draws = torch.randint(7, (1, 300, 7), generator=torch.Generator().manual_seed(5))[0]
    by_sorting = torch.quantile(data[draws], 0.25, dim=1)
    expected = percentile_bounds(by_sorting)
    assert (float(lower), float(upper)) == pytest.approx((float(expected[0]), float(expected[1])))


def test_bootstrap_means_average_the_resampled_rows() -> None:
    table = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, 4.0]])
    means = bootstrap_means(table, generator=torch.Generator().manual_seed(0), resamples=50)
    assert means.shape == (50, 2)
    assert torch.allclose(means[:, 0], torch.ones(50, dtype=torch.float64))  # a constant column stays constant
    assert bool(((means[:, 1] >= 0) & (means[:, 1] <= 4)).all())


def test_measure_gives_min_and_max_no_interval() -> None:
    values = torch.tensor([0.1, 0.4, math.nan, 0.8])
    for how in ("min", "max"):
        measurement = measure(f"iou.{how}", values, how, Threshold(">=", 0.0), seed=0)
        assert measurement.interval is None and measurement.samples == 3
    mean = measure("iou.mean", values, "mean", Threshold(">=", 0.0), seed=0)
    assert mean.lower is not None and mean.upper is not None and mean.lower < mean.value < mean.upper


# --- decide: interval


def decided(value: float, bounds: tuple[float, float], threshold: str, samples: int = 100) -> Measurement:
    return Measurement.compare("m", value, Threshold.parse(threshold), bounds=bounds, samples=samples).by_interval()


def test_an_interval_above_the_threshold_passes() -> None:
    measurement = decided(0.30, (0.25, 0.35), ">= 0.2")
    assert measurement.passed and not measurement.inconclusive and measurement.status == "ok"


def test_an_interval_below_the_threshold_fails() -> None:
    measurement = decided(0.10, (0.05, 0.15), ">= 0.2")
    assert not measurement.passed and not measurement.inconclusive and measurement.status == "failed"


def test_an_interval_across_the_threshold_is_inconclusive_with_the_samples_it_would_need() -> None:
    measurement = decided(0.21, (0.17, 0.25), ">= 0.2", samples=100)
    assert measurement.status == "inconclusive" and not measurement.passed
    # the lower half-width 0.04 must shrink below the distance 0.01: 100 * (0.04 / 0.01)^2
    assert measurement.needed == pytest.approx(1600, abs=1)
    assert Threshold.parse(">= 0.2").passes(0.21)  # the point decision would have passed


def test_upper_bounded_thresholds_decide_by_the_upper_bound() -> None:
    assert decided(0.01, (0.0, 0.04), "<= 0.05").passed
    assert decided(0.07, (0.06, 0.09), "<= 0.05").status == "failed"
    straddling = decided(0.04, (0.01, 0.07), "<= 0.05", samples=256)
    assert straddling.status == "inconclusive" and straddling.needed == pytest.approx(256 * 9, abs=1)


def test_a_value_on_the_threshold_needs_no_particular_number_of_samples() -> None:
    assert decided(0.2, (0.15, 0.25), ">= 0.2").needed is None


def test_without_an_interval_the_point_decides_and_an_undefined_one_is_inconclusive() -> None:
    no_interval = Measurement.compare("iou.min", 0.3, Threshold(">=", 0.2)).by_interval()
    assert no_interval.passed
    undefined = Measurement.compare("iou.mean", 0.3, Threshold(">=", 0.2), bounds=(math.nan, math.nan), samples=1)
    assert undefined.by_interval().status == "inconclusive"


def test_an_outcome_is_inconclusive_only_when_nothing_failed() -> None:
    inconclusive = decided(0.21, (0.17, 0.25), ">= 0.2")
    ok = decided(0.30, (0.25, 0.35), ">= 0.2")
    failed = decided(0.10, (0.05, 0.15), ">= 0.2")
    assert Outcome([ok, inconclusive], samples=100).inconclusive
    assert not Outcome([failed, inconclusive], samples=100).inconclusive
    assert not Outcome([ok], samples=100).inconclusive and Outcome([ok], samples=100).passed


def test_point_decisions_are_unchanged_by_the_interval() -> None:
    outcome = Outcome([Measurement.compare("m", 0.21, Threshold(">=", 0.2), bounds=(0.17, 0.25))], samples=10)
    assert outcome.decided("point").passed
