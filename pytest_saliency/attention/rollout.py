"""Attention rollout (Abnar & Zuidema, ACL 2020): pure tensor code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(attention: Tensor, head_fusion: HeadFusion) -> Tensor:
    """``(N, heads, T, T)`` attention probabilities -> ``(N, T, T)`` by the mean, max or min
    over heads."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    return attention.amin(dim=1)


def discard_lowest(fused: Tensor, ratio: float) -> Tensor:
    """``fused`` ``(N, T, T)`` with its lowest ``ratio`` fraction of entries per sample set to 0,
    the first token's attention to itself kept (as the paper's code does)."""
    count = int(fused[0].numel() * ratio)
    if count == 0:
        return fused
    flat = fused.flatten(1)
    lowest = flat.topk(count, dim=1, largest=False).indices
    kept = flat.scatter(1, lowest, 0.0)
    kept[:, 0] = flat[:, 0]
    return kept.view_as(fused)


def rollout(attentions: Sequence[Tensor], head_fusion: HeadFusion = "mean", discard_ratio: float = 0.0) -> Tensor:
    """``R = Â_L … Â_1`` with ``Â_l = (fused(A_l) + I) / 2``, rows renormalised to sum 1:
    ``(N, T, T)`` from the blocks' ``(N, heads, T, T)`` probabilities, first block first."""
    result: Tensor | None = None
    for attention in attentions:
        fused = discard_lowest(fuse_heads(attention.float(), head_fusion), discard_ratio)
        eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
        step = (fused + eye) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        result = step if result is None else step @ result
    if result is None:
        raise ValueError("rollout needs the attention of at least one block")
    return result
