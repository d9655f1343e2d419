"""Boxes over a detection sample's thumbnail: outlines where the box's border pixels are, the
ground truth drawn over the matched detection, over the others."""

from __future__ import annotations

import pytest
import torch

from pytest_saliency.report.boxes import (
    DETECTION_COLOUR,
    MATCHED_COLOUR,
    TRUTH_COLOUR,
    DrawnBoxes,
    draw,
    outlined,
)


def test_an_outline_is_the_ring_of_pixels_just_inside_the_box() -> None:
    panel = torch.zeros(8, 8, 3)
    drawn = outlined(panel, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), 2.0, (1.0, 1.0, 1.0))  # [2, 2, 6, 6] at scale 2
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    assert torch.equal(drawn[..., 0] == 1.0, ring)
    assert torch.equal(outlined(panel, torch.zeros(0, 4), 1.0, (1.0, 1.0, 1.0)), panel)


def test_the_truth_is_drawn_over_the_matched_detection_over_the_others() -> None:
    boxes = DrawnBoxes(
        truth=torch.tensor([0.0, 0.0, 4.0, 4.0]),
        detections=torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0], [0.0, 4.0, 4.0, 8.0]]),
        matched=2,
    )
    drawn = draw(torch.zeros(8, 8, 3), boxes, 1.0)
    assert drawn[0, 0].tolist() == pytest.approx(TRUTH_COLOUR)  # the truth hides detection 0 beneath it
    assert drawn[7, 7].tolist() == pytest.approx(DETECTION_COLOUR)
    assert drawn[7, 0].tolist() == pytest.approx(MATCHED_COLOUR)
    assert drawn[2, 2].tolist() == [0.0, 0.0, 0.0]
