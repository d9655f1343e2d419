"""Small vision transformers for 32×32 images (the shapes data), as a spec's ``factory:``.

:func:`build` is torchvision's ``VisionTransformer`` sized for 32×32 images (8×8 patches, a
4×4 grid of tokens after the class token). torchvision initialises the head to zeros, which makes
every gradient of a fresh model zero; ``head_init`` draws it instead, for tests of untrained models.

:func:`build_hybrid` is the shipped ViT pair's network (``clean.pt``, ``decoy.pt``; see this
folder's README): the same ``VisionTransformer`` with a convolutional stem in place of the patch
embedding (Xiao et al. 2021, "Early convolutions help transformers see better"; torchvision's
``conv_stem_configs``), which a plain tiny ViT needs to learn the shapes from a few thousand images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import ConvStemConfig


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


HYBRID_STEM = (24, 48)
"""Output channels of the hybrid's two 3×3, stride-2 conv + BatchNorm + ReLU layers."""


def build_hybrid(num_classes: int = 3, layers: int = 3, heads: int = 3, width: int = 48) -> VisionTransformer:
    """The shipped pair's ViT: ``(N, 3, 32, 32)`` images to ``(N, num_classes)`` logits.

    A stem of two 3×3 stride-2 convolutions (:data:`HYBRID_STEM` channels, each with BatchNorm and
    ReLU) and a 1×1 convolution to ``width`` turns each 4×4 patch into a token: an 8×8 grid of
    tokens plus the class token, then ``layers`` encoder blocks of ``heads`` heads and an MLP of
    twice the width. torchvision's own encoder and head, so rollout, relevance, ``layer: auto``
    and contextual decomposition treat it as any torchvision ViT.
    """
    stem = [ConvStemConfig(out_channels=channels, kernel_size=3, stride=2) for channels in HYBRID_STEM]
    return VisionTransformer(
        image_size=32,
        patch_size=4,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=2 * width,
        num_classes=num_classes,
        conv_stem_configs=stem,
    )


def load(path: str | Path, num_classes: int = 3) -> VisionTransformer:
    """``build_hybrid(num_classes)`` with the state_dict at ``path`` (``weights_only=True``), in eval mode."""
    model = build_hybrid(num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
