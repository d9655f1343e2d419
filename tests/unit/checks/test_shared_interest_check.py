"""``shared_interest``: aggregates of IoU, GTC and SC, and the worst examples as typed rows."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def scores() -> dict[str, torch.Tensor]:
    return {
        "iou": torch.tensor([0.8, 0.1, 0.5, math.nan]),
        "gtc": torch.tensor([0.9, 0.2, 0.6, 0.5]),
        "sc": torch.tensor([0.9, 0.9, 0.7, 0.4]),
        "sc_continuous": torch.tensor([0.5, 0.5, 0.5, 0.5]),
    }


def test_the_worst_rows_are_the_lowest_of_the_failing_metric_with_their_patterns() -> None:
    block = {"methods": ["grad"], "iou": {"mean": ">= 0.6"}, "gtc": {"mean": ">= 0.3"}}
    outcome = decided("shared_interest", block, scores(), labels=[0, 1, 0, 1], predictions=[0, 0, 0, 1])
    measured = by_key(outcome)
    assert measured["iou.mean"].value == pytest.approx(1.4 / 3) and not measured["iou.mean"].passed
    assert measured["gtc.mean"].passed
    assert outcome.undefined == 1
    result = outcome.to_dict()
    assert result["worst_by"] == "iou"
    worst = result["worst"]
    assert [row["index"] for row in worst] == [11, 12, 10, 13]  # lowest IoU first, undefined last
    assert worst[0]["label"] == "b" and worst[0]["predicted"] == "a"
    assert worst[3]["iou"] is None
    assert all(isinstance(row["patterns"], list) for row in worst)
    assert result["per_sample"]["index"] == [10, 11, 12, 13]


def test_a_class_without_samples_fails_and_says_so() -> None:
    block = {"methods": ["grad"], "iou": {"mean": ">= 0.6"}}
    outcome = decided("shared_interest", block, scores(), class_index=1, labels=[0, 0, 0, 0])
    assert not outcome.passed and outcome.samples == 0
    assert outcome.details[0] == "no samples of class 'b'"
