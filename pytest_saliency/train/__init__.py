"""Remedies: training with explanation penalties and saliency-guided training."""

from pytest_saliency.train.cdep import cdep_penalty, decoy_corner_masks
from pytest_saliency.train.saliency_guided import (
    mask_lowest_saliency,
    saliency_guided_loss,
    saliency_guided_step,
    saliency_guided_terms,
)

__all__ = [
    "cdep_penalty",
    "decoy_corner_masks",
    "mask_lowest_saliency",
    "saliency_guided_loss",
    "saliency_guided_step",
    "saliency_guided_terms",
]
