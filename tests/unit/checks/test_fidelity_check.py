"""``fidelity``: the MIF/LIF curves' AUCs and gap from hand-made per-sample scores, and the
payload's typed curve summary."""

from __future__ import annotations

import pytest
import torch

from tests.unit.checks.hand_made import by_key, decided


def test_the_gap_of_straight_curves_and_the_summary_in_the_payload() -> None:
    # 2 samples, 5 fractions 0..0.8: MIF falls linearly to 0 at 0.8, LIF stays at the clean score
    fractions = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8])
    mif = (1 - fractions / 0.8).expand(2, 5).clone()
    statistics = {
        "mif": mif,
        "lif": torch.ones(2, 5),
        "clean": torch.ones(2),
        "units": torch.tensor([16, 16]),
    }
    block = {"methods": ["grad"], "steps": 5, "gap": ">= 0.3", "mif_auc": "<= 0.5", "orders": ["mif", "lif"]}
    outcome = decided("fidelity", block, statistics)
    measured = by_key(outcome)
    assert measured["gap"].value == pytest.approx(0.4) and measured["gap"].passed  # 0.8 - 0.4
    assert measured["mif_auc"].value == pytest.approx(0.4) and measured["mif_auc"].samples == 2
    result = outcome.to_dict()
    assert list(result)[-3:] == ["fractions", "curves", "fidelity"]  # the JSON's key order
    assert result["curves"]["mif"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    summary = result["fidelity"]
    assert summary["orders"]["lif"]["mean_auc"] == pytest.approx(0.8)
    assert summary["gap"] == pytest.approx(0.4) and summary["n_undefined"] == 0
    assert summary["counts"] == [0, 3, 6, 9, 12]
