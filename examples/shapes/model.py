"""The small CNN used by the shapes examples.

Built only from ``nn.Sequential`` layers (Conv2d, ReLU, MaxPool2d, AdaptiveAvgPool2d, Flatten,
Linear) with no functional operations in ``forward``, so contextual decomposition can walk it
layer by layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def build(num_classes: int = 3) -> nn.Module:
    """Three conv blocks and a linear head; maps ``(N, 3, H, W)`` images to ``(N, num_classes)`` logits."""
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def load(path: str | Path, num_classes: int = 3) -> nn.Module:
    """``build(num_classes)`` with the state_dict at ``path`` loaded (``weights_only=True``), in eval mode."""
    model = build(num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
