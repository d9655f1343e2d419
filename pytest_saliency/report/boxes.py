"""Boxes drawn over a report thumbnail (``task: detection``): the sample's ground-truth box, the
detections the model makes on the clean image, and the one matched to the object highlighted.

Pure image code over ``(H, W, 3)`` panels: every box is outlined at once (no loop over pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

TRUTH_COLOUR = (0.15, 0.85, 0.25)
"""The ground truth's green, as the thumbnails' outlines."""
DETECTION_COLOUR = (0.35, 0.6, 1.0)
MATCHED_COLOUR = (1.0, 0.2, 0.75)


@dataclass(frozen=True)
class DrawnBoxes:
    """What one detection sample's thumbnail shows: its object's box ``(4,)``, the detections on
    its image ``(K, 4)`` (x1, y1, x2, y2 in image pixels) and which of them is matched (None: the
    object is missed)."""

    truth: Tensor
    detections: Tensor
    matched: int | None


def outlined(panel: Tensor, boxes: Tensor, scale: float, colour: tuple[float, float, float]) -> Tensor:
    """``panel`` ``(H, W, 3)`` with the outlines of ``boxes`` ``(K, 4)`` (image pixels, drawn at
    ``scale`` panel pixels per image pixel) in ``colour``, ``max(1, H // 48)`` pixels wide."""
    if not boxes.numel():
        return panel
    height, width = panel.shape[:2]
    line = max(1, height // 48)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5).view(1, -1, 1)
    xs = (torch.arange(width, dtype=torch.float32) + 0.5).view(1, 1, -1)
    x1, y1, x2, y2 = (boxes.float().cpu()[:, i].view(-1, 1, 1) * scale for i in range(4))
    inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    inner = (xs >= x1 + line) & (xs <= x2 - line) & (ys >= y1 + line) & (ys <= y2 - line)
    edge = (inside & ~inner).any(dim=0)[..., None]
    return torch.where(edge, torch.tensor(colour), panel)


def draw(panel: Tensor, drawn: DrawnBoxes, scale: float) -> Tensor:
    """``panel`` with the detections (blue), the matched one (magenta) and the ground-truth box
    (green) on top."""
    others = [k for k in range(drawn.detections.shape[0]) if k != drawn.matched]
    panel = outlined(panel, drawn.detections[others], scale, DETECTION_COLOUR)
    if drawn.matched is not None:
        panel = outlined(panel, drawn.detections[drawn.matched : drawn.matched + 1], scale, MATCHED_COLOUR)
    return outlined(panel, drawn.truth.view(1, 4), scale, TRUTH_COLOUR)
