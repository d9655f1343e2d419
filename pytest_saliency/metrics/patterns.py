"""The eight Shared Interest behaviour patterns.

Boggust et al., CHI 2022, §4.2 (Table 1): a sample's prediction (correct or not) and its IoU,
ground-truth coverage and saliency coverage place it in recurring patterns of model behaviour.
Levels follow the authors' interactive prototype: scores are rounded to two decimals, "low" is
``[0, low]`` and "high" is ``[high, 1]`` (defaults 0.30 and 0.70, both inclusive). A sample can
match several patterns or none; a sample with an undefined (NaN) score matches none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._constants import PATTERN_NAMES

DEFAULT_LOW = 0.30
DEFAULT_HIGH = 0.70


def behaviour_patterns(
    iou: Tensor,
    ground_truth_coverage: Tensor,
    saliency_coverage: Tensor,
    correct: Tensor,
    *,
    low: float = DEFAULT_LOW,
    high: float = DEFAULT_HIGH,
) -> Tensor:
    """Assign the eight patterns to ``N`` samples.

    Takes ``(N,)`` float scores and ``(N,) bool`` correctness; returns ``(N, 8) bool`` whose
    columns follow :data:`PATTERN_NAMES`.
    """

    def level(scores: Tensor) -> tuple[Tensor, Tensor]:
        rounded = torch.round(scores.double() * 100) / 100  # NaN compares False: no level
        return rounded <= low + 1e-9, rounded >= high - 1e-9

    iou_low, iou_high = level(iou)
    gtc_low, gtc_high = level(ground_truth_coverage)
    sc_low, sc_high = level(saliency_coverage)
    correct = correct.bool().to(iou.device)
    # any undefined score (e.g. GTC NaN while IoU is 0 for an empty ground truth) matches nothing
    defined = ~(iou.isnan() | ground_truth_coverage.isnan() | saliency_coverage.isnan())
    subset = gtc_low & sc_high
    context = gtc_high & sc_low
    by_score = (iou_high, subset, iou_low, context)
    columns = [correct & condition for condition in by_score] + [~correct & condition for condition in by_score]
    return torch.stack(columns, dim=1) & defined.unsqueeze(1)


def pattern_fractions(patterns: Tensor) -> dict[str, float]:
    """Fraction of samples in each pattern, from ``(N, 8) bool``; an empty batch gives 0."""
    count = max(patterns.shape[0], 1)
    totals = patterns.sum(dim=0).tolist()
    return {name: total / count for name, total in zip(PATTERN_NAMES, totals, strict=True)}
