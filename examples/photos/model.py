"""The photos example's model: a small CNN with seeded weights, nothing trained or downloaded.

It stands in for a real classifier to show the data path (image files of mixed sizes and modes,
boxes in VOC XML or COCO JSON, one transform): point the spec at your own model instead.
"""

from __future__ import annotations

import torch
from torch import nn


def build(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """Two strided conv blocks and a linear head, initialised from ``seed`` (the global RNG
    untouched); maps ``(N, 3, H, W)`` images to ``(N, num_classes)`` logits."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, num_classes),
        )
    return model.eval()
