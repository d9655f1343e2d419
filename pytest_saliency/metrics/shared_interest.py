"""Shared Interest: agreement between saliency and human-annotated regions.

Boggust, Hoover, Satyanarayan, Strobelt, "Shared Interest: Measuring Human-AI Alignment to
Identify Recurring Patterns in Model Behavior", CHI 2022, §3:

- IoU = |G ∩ S| / |G ∪ S|
- ground-truth coverage GTC = |G ∩ S| / |G|
- saliency coverage SC = |G ∩ S| / |S|; its continuous form is the saliency mass inside G over
  the total saliency mass.

Every function takes ``(N, H, W)`` tensors and returns ``(N,)`` float scores. A ratio whose
denominator is empty (an empty ground truth for GTC, an empty saliency region for SC, both for
IoU) is undefined and returned as NaN, never as 0: callers count such samples separately
(:func:`defined`), so they never vanish silently into a mean.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(saliency: Tensor, ground_truth: Tensor) -> None:
    if saliency.shape != ground_truth.shape or saliency.dim() != 3:
        raise ValueError(
            "saliency and ground_truth must both be (N, H, W), got "
            f"{tuple(saliency.shape)} and {tuple(ground_truth.shape)}"
        )


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), torch.nan).float()


def iou(saliency: Tensor, ground_truth: Tensor) -> Tensor:
    """Intersection over union ``|G ∩ S| / |G ∪ S|`` of ``(N, H, W) bool`` regions, ``(N,)``."""
    _check_pair(saliency, ground_truth)
    saliency, ground_truth = saliency.bool(), ground_truth.bool()
    intersection = (saliency & ground_truth).flatten(1).sum(1)
    union = (saliency | ground_truth).flatten(1).sum(1)
    return _ratio(intersection, union)


def ground_truth_coverage(saliency: Tensor, ground_truth: Tensor) -> Tensor:
    """Ground-truth coverage ``|G ∩ S| / |G|`` of ``(N, H, W) bool`` regions, ``(N,)``."""
    _check_pair(saliency, ground_truth)
    saliency, ground_truth = saliency.bool(), ground_truth.bool()
    return _ratio((saliency & ground_truth).flatten(1).sum(1), ground_truth.flatten(1).sum(1))


def saliency_coverage(saliency: Tensor, ground_truth: Tensor) -> Tensor:
    """Saliency coverage, ``(N,)``.

    With a ``(N, H, W) bool`` saliency region: ``|G ∩ S| / |S|``. With a continuous
    ``(N, H, W)`` float map: ``sum |saliency| inside G / sum |saliency|`` (the paper's
    continuous form).
    """
    _check_pair(saliency, ground_truth)
    ground_truth = ground_truth.bool()
    if saliency.dtype == torch.bool:
        return _ratio((saliency & ground_truth).flatten(1).sum(1), saliency.flatten(1).sum(1))
    mass = saliency.abs().double()
    return _ratio((mass * ground_truth).flatten(1).sum(1), mass.flatten(1).sum(1))


def defined(scores: Tensor) -> Tensor:
    """``(N,) bool``: True where a score is defined (not NaN)."""
    return ~torch.isnan(scores)
