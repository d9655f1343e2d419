"""Box geometry shared by detection targets and D-RISE: boxes are ``(K, 4)`` rows of
``x1, y1, x2, y2`` in pixels."""

from __future__ import annotations

import torch
from torch import Tensor


def box_iou(first: Tensor, second: Tensor) -> Tensor:
    """``(K, 4)``, ``(S, 4)`` boxes x1, y1, x2, y2 -> ``(K, S)`` intersection over union (0 for
    two empty boxes)."""
    low = torch.maximum(first[:, None, :2], second[None, :, :2])
    high = torch.minimum(first[:, None, 2:], second[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    area_first = (first[:, 2:] - first[:, :2]).clamp(min=0).prod(dim=1)
    area_second = (second[:, 2:] - second[:, :2]).clamp(min=0).prod(dim=1)
    union = area_first[:, None] + area_second[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)
