"""Small vision transformers for the shapes data and the transformer tests.

:func:`build` is torchvision's ``VisionTransformer`` sized for 32×32 images (4×4 patches, an
8×8 grid of tokens after the class token). torchvision initialises the head to zeros, which makes
every gradient of a fresh model zero; ``head_init`` draws it instead, for tests of untrained models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import VisionTransformer


def build(
    num_classes: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    layers: int = 2,
    heads: int = 4,
    width: int = 48,
    seed: int | None = None,
    head_init: bool = False,
) -> VisionTransformer:
    """A ``layers``-block ViT of ``width`` channels with ``heads`` heads and an MLP of twice the
    width, mapping ``(N, 3, image_size, image_size)`` images to ``(N, num_classes)`` logits;
    ``seed`` seeds its initialisation, ``head_init`` draws its head (see the module doc)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=2 * width,
        num_classes=num_classes,
    )
    if head_init:
        head = model.heads.head
        assert isinstance(head, nn.Linear)
        nn.init.normal_(head.weight, std=width**-0.5)
    return model


def load(path: str | Path, num_classes: int = 3) -> nn.Module:
    """``build(num_classes)`` with the state_dict at ``path`` loaded (``weights_only=True``), in eval mode."""
    model = build(num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model
