"""``localisation``: aggregates of the localisation family's per-sample scores."""

from __future__ import annotations

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_each_thresholded_metric_is_measured_by_key_and_the_settings_are_told() -> None:
    statistics = {
        "pointing_game": torch.tensor([1.0, 0.0, 1.0, 1.0]),
        "auc": torch.tensor([0.9, 0.6, 0.7, 0.8]),
    }
    block = {"methods": ["grad"], "pointing_game": {"mean": ">= 0.8"}, "auc": {"mean": ">= 0.7"}, "tolerance": 0}
    outcome = decided("localisation", block, statistics)
    measured = by_key(outcome)
    assert measured["pointing_game.mean"].value == pytest.approx(0.75) and not measured["pointing_game.mean"].passed
    assert measured["auc.mean"].value == pytest.approx(0.75) and measured["auc.mean"].passed
    assert not outcome.passed
    assert "pointing game tolerance 0 px" in outcome.details[0]
    # the worst samples by the failing metric: sample 11 (pointing game 0) first
    assert outcome.details[2].split()[0] == "11"
