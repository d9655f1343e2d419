"""``agreement``: the rank correlation of two methods' maps against its thresholds."""

from __future__ import annotations

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_the_mean_rank_correlation_is_measured_against_the_reference() -> None:
    statistics = {"rank_correlation": torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=torch.float64)}
    block = {"methods": ["grad"], "reference": "ig", "rank_correlation": {"mean": ">= 0.5"}}
    outcome = decided("agreement", block, statistics)
    measurement = by_key(outcome)["rank_correlation.mean"]
    assert measurement.value == pytest.approx(0.6) and measurement.passed
    assert measurement.lower is not None and measurement.lower < 0.6 < (measurement.upper or 0.0)
    assert outcome.details[0].startswith("Spearman rank correlation of each grad map with its ig map")
    assert outcome.to_dict()["per_sample"]["rank_correlation"] == [0.9, 0.7, 0.5, 0.3]
