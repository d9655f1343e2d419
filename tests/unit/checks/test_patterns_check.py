"""``patterns``: limits on the share of samples in each behaviour pattern, keyed by pattern."""

from __future__ import annotations

import torch

from tests.unit.checks.hand_made import by_key, decided


def test_a_forbidden_pattern_fails_with_its_wilson_interval_and_its_samples_shown() -> None:
    # samples 10 and 13: IoU 0.9, correct (human aligned); 11 and 12: no overlap, wrong (distractors)
    statistics = {
        "iou": torch.tensor([0.9, 0.0, 0.0, 0.9]),
        "gtc": torch.tensor([0.9, 0.0, 0.0, 0.9]),
        "sc": torch.tensor([0.9, 0.0, 0.0, 0.9]),
    }
    block = {"methods": ["grad"], "max_fraction": {"distractor": 0.25}}
    outcome = decided("patterns", block, statistics, predictions=[0, 1, 1, 0])
    measurement = by_key(outcome)["fraction_distractor"]
    assert measurement.name == "fraction distractor" and measurement.value == 0.5 and not measurement.passed
    assert measurement.lower is not None and measurement.upper is not None
    assert 0.0 < measurement.lower < 0.5 < measurement.upper < 1.0
    result = outcome.to_dict()
    assert result["pattern_counts"]["distractor"] == 2 and result["pattern_fractions"]["distractor"] == 0.5
    assert result["worst_in"] == "distractor"
    assert [row["index"] for row in result["worst"]] == [11, 12]
    assert "samples in distractor:" in outcome.details
