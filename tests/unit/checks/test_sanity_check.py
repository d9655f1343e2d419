"""``sanity``: the random-logit test from hand-made similarities, and its payload."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_random_logit_measures_the_mean_similarity_to_another_class() -> None:
    statistics = {
        "similarity": torch.tensor([0.2, 0.4, math.nan, 0.6], dtype=torch.float64),
        "other_class": torch.tensor([1, 1, 0, 1]),
    }
    block = {"methods": ["grad"], "test": "random_logit", "final": "<= 0.3"}
    outcome = decided("sanity", block, statistics)
    (measurement,) = outcome.measurements
    assert measurement.value == pytest.approx(0.4) and not measurement.passed
    assert outcome.undefined == 1
    sanity = outcome.to_dict()["sanity"]
    assert sanity["test"] == "random_logit" and sanity["other_class"] == [1, 1, 0, 1]
    assert sanity["per_sample"][2] is None
    assert by_key(outcome)  # keyed by its label
