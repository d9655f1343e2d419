"""Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021, "Generic
Attention-model Explainability"): pure tensor code."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def relevance(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """``R - I`` after ``R ← R + E_h[(∇A ⊙ A)⁺] R`` per block from ``R = I``: ``(N, T, T)`` from
    the blocks' ``(N, heads, T, T)`` probabilities and the target score's gradients with respect
    to them, first block first."""
    result: Tensor | None = None
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)
        if result is None:
            result = torch.eye(weighted.shape[-1], device=weighted.device).expand_as(weighted)
        result = result + weighted @ result
    if result is None:
        raise ValueError("attention relevance needs the attention of at least one block")
    return result - torch.eye(result.shape[-1], device=result.device)
