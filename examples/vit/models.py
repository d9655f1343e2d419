"""A small vision transformer for 32×32 images (the shapes data), as a spec's ``factory:``.

:func:`build` is torchvision's ``VisionTransformer`` sized for 32×32 images (8×8 patches, a
4×4 grid of tokens after the class token). torchvision initialises the head to zeros, which makes
every gradient of a fresh model zero; ``head_init`` draws it instead, for tests of untrained models.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VisionTransformer


def build(
    num_classes: int = 3,
    image_size: int = 32,
    patch_size: int = 8,
    layers: int = 2,
    heads: int = 2,
    width: int = 32,
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
