"""How many samples an inconclusive measurement needs (docs/spec.md, "Intervals and decisions")."""

from __future__ import annotations

import torch

from pytest_saliency.checks.outcome import Measurement
from pytest_saliency.metrics.intervals import wilson_interval
from pytest_saliency.spec.schema import Threshold


def test_a_failing_value_needs_its_half_width_toward_the_threshold_to_shrink() -> None:
    # 1 of 10 against >= 0.3: Wilson [0.0179, 0.4042], asymmetric. The upper half-width 0.3042
    # must shrink below the distance 0.2: about 10 * (0.3042 / 0.2)^2 = 23.1 samples, not the
    # 10 * (0.0821 / 0.2)^2 (11 at least) the lower, passing-side half-width would give.
    lower, upper = wilson_interval(torch.tensor([1]), torch.tensor(10))
    measurement = Measurement.compare(
        "fraction x", 0.1, Threshold(">=", 0.3), bounds=(float(lower[0]), float(upper[0])), samples=10
    ).by_interval()
    assert measurement.inconclusive and measurement.needed == 24


def test_a_passing_value_needs_its_half_width_toward_the_threshold_to_shrink() -> None:
    # the mirror image: 9 of 10 against <= 0.7 has its bound toward the threshold below it
    lower, upper = wilson_interval(torch.tensor([9]), torch.tensor(10))
    measurement = Measurement.compare(
        "fraction x", 0.9, Threshold("<=", 0.7), bounds=(float(lower[0]), float(upper[0])), samples=10
    ).by_interval()
    assert measurement.inconclusive and measurement.needed == 24
