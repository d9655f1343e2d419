"""The small detector and segmenter of the multi-object shapes examples.

``build_detector`` is a CenterNet-style network (Zhou et al. 2019): a class heatmap and a box size
at every 4×4 cell; its ``forward`` decodes the peaks into torchvision's detection form, one dict
per image with ``boxes (K, 4)``, ``labels (K,)``, ``scores (K,)`` and ``probabilities (K, 3)`` (the
heatmap's classes at the peak, which D-RISE compares). Scores are gathered from the heatmap, so
gradients reach the image. ``build_segmenter`` gives ``(N, 4, H, W)`` logits (background + 3 shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDE = 4
CLASSES = 3
TOP_K = 10
"""Detections per image (the highest peaks), like torchvision's ``detections_per_img``."""
SCORE_THRESH = 0.05


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Detector(nn.Module):
    """Images ``(N, 3, H, W)`` -> one dict of detections per image (module docs)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 12), nn.MaxPool2d(2), _block(12, 24), nn.MaxPool2d(2), _block(24, 32), _block(32, 32)
        )
        self.heatmap = nn.Conv2d(32, CLASSES, 1)
        self.size = nn.Conv2d(32, 2, 1)
        assert self.heatmap.bias is not None
        nn.init.constant_(self.heatmap.bias, -2.2)  # CenterNet's prior: few cells are centres

    def heads(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, classes, h, w)`` heatmap logits and ``(N, 2, h, w)`` box width and height / STRIDE."""
        features = self.features(images)
        return self.heatmap(features), self.size(features)

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        logits, size = self.heads(images)
        heat = logits.sigmoid()
        n, classes, h, w = heat.shape
        peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
        candidates = torch.where(peaks, heat, torch.zeros_like(heat)).flatten(1)
        top = candidates.detach().topk(TOP_K, dim=1).indices  # (N, K): the peaks chosen without gradient
        output = []
        for i in range(n):
            keep = top[i][candidates[i, top[i]].detach() > SCORE_THRESH]
            label, cell = keep // (h * w), keep % (h * w)
            y, x = (cell // w).float(), (cell % w).float()
            wh = size[i].flatten(1)[:, cell].t() * STRIDE  # (K, 2)
            cx, cy = (x + 0.5) * STRIDE, (y + 0.5) * STRIDE
            boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], dim=1)
            output.append(
                {
                    "boxes": boxes,
                    "labels": label,
                    "scores": candidates[i, keep],
                    "probabilities": heat[i].flatten(1)[:, cell].t(),
                }
            )
        return output


def build_detector() -> nn.Module:
    """The detector, at random initialisation."""
    return Detector()


def build_segmenter() -> nn.Module:
    """A small encoder-decoder: ``(N, 3, H, W)`` -> ``(N, 4, H, W)`` logits (H, W divisible by 4)."""
    return nn.Sequential(
        _block(3, 12),
        nn.MaxPool2d(2),
        _block(12, 24),
        nn.MaxPool2d(2),
        _block(24, 32),
        _block(32, 32),
        _block(32, 32),
        nn.Conv2d(32, CLASSES + 1, 1),
        nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
    )
