"""``robustness``: aggregates of sensitivity and infidelity, and the settings in the payload."""

from __future__ import annotations

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_the_payload_records_the_perturbation_settings() -> None:
    statistics = {"max_sensitivity": torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)}
    block = {"methods": ["grad"], "n_perturb_samples": 5, "perturb_radius": 0.05, "max_sensitivity": {"mean": "<= 0.2"}}
    outcome = decided("robustness", block, statistics)
    measurement = by_key(outcome)["max_sensitivity.mean"]
    assert measurement.value == pytest.approx(0.3) and not measurement.passed
    result = outcome.to_dict()
    assert result["robustness"] == {
        "perturb_radius": 0.05,
        "n_perturb_samples": 5,
        "norm_ord": "fro",
        "noise_std": result["robustness"]["noise_std"],
        "normalize": result["robustness"]["normalize"],
    }
    assert list(result)[-2:] == ["per_sample", "robustness"]  # the JSON's key order
    assert outcome.details[0].startswith("5 perturbations per image; sensitivity: uniform noise in ±0.05")
