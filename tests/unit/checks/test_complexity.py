"""``complexity``: aggregates of per-sample sparseness and entropy against their thresholds."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_means_of_the_scores_are_measured_and_a_too_flat_map_fails() -> None:
    statistics = {
        "pixels": torch.full((4,), 16),
        "sparseness": torch.tensor([0.2, 0.4, 0.6, 0.8]),
        "complexity": torch.tensor([1.0, 2.0, 3.0, math.nan]),
    }
    block = {"methods": ["grad"], "sparseness": {"mean": ">= 0.6"}, "complexity": {"mean": "<= 2.5"}}
    outcome = decided("complexity", block, statistics)
    measured = by_key(outcome)
    assert set(measured) == {"sparseness.mean", "complexity.mean"}
    assert measured["sparseness.mean"].value == pytest.approx(0.5) and not measured["sparseness.mean"].passed
    assert measured["complexity.mean"].value == pytest.approx(2.0) and measured["complexity.mean"].passed
    assert (outcome.samples, outcome.undefined) == (4, 1)
    assert "ln 16 = 2.773" in outcome.details[0]
    per_sample = outcome.to_dict()["per_sample"]
    assert per_sample["index"] == [10, 11, 12, 13] and per_sample["complexity"][3] is None
    assert "pixels" not in per_sample
