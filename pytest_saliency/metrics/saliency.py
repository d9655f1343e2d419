"""From attributions to 2-D saliency maps and binary saliency regions.

Follows the recipe of Shared Interest (Boggust et al., CHI 2022, §4 and the authors' code):
collapse the channels, min-max normalise each map to ``[0, 1]``, then binarise with
``x >= mean + k·std`` (their default, ``k = 1``), a percentile, a top fraction or a fixed
threshold. The authors take the absolute value before the channel sum (``abs_sum``); for signed
methods (Integrated Gradients, DeepLift, SHAP) that counts negative evidence as importance, so the
signed reductions ``sum`` and ``positive`` are offered too.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

ChannelReduction = Literal["sum", "abs_sum", "max_abs", "positive"]
CHANNEL_REDUCTIONS: tuple[str, ...] = ("sum", "abs_sum", "max_abs", "positive")


def reduce_channels(attributions: Tensor, reduction: ChannelReduction = "abs_sum") -> Tensor:
    """Collapse ``(N, C, H, W)`` attributions to ``(N, H, W)`` maps.

    ``sum``: signed sum over channels; ``abs_sum``: sum of absolute values (abs before the sum,
    as the Shared Interest authors do); ``max_abs``: largest absolute value over channels;
    ``positive``: the positive part of the signed sum (only evidence *for* the target).
    A ``(N, H, W)`` input is treated as one channel.
    """
    if attributions.dim() == 3:
        attributions = attributions.unsqueeze(1)
    if attributions.dim() != 4:
        raise ValueError(f"attributions must be (N, C, H, W) or (N, H, W), got {tuple(attributions.shape)}")
    if reduction == "sum":
        return attributions.sum(dim=1)
    if reduction == "abs_sum":
        return attributions.abs().sum(dim=1)
    if reduction == "max_abs":
        return attributions.abs().amax(dim=1)
    if reduction == "positive":
        return attributions.sum(dim=1).clamp(min=0)
    raise ValueError(f"unknown channel reduction {reduction!r}; expected one of {CHANNEL_REDUCTIONS}")


def normalize_maps(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Min-max normalise each ``(N, H, W)`` map to ``[0, 1]``.

    Returns ``(normalised, defined)``: ``defined`` is ``(N,) bool``, False for a constant map
    (min == max), whose normalised values are all 0 and which must be reported as undefined
    rather than binarised.
    """
    flat = maps.flatten(1).float()
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    defined = span.squeeze(1) > 0
    normalised = torch.where(span > 0, (flat - low) / span.clamp(min=torch.finfo(flat.dtype).tiny), 0.0)
    return normalised.view_as(maps), defined


def binarize(
    maps: Tensor,
    *,
    std: float | None = None,
    percentile: float | None = None,
    top_fraction: float | None = None,
    threshold: float | None = None,
) -> Tensor:
    """Binarise normalised ``(N, H, W)`` maps into ``(N, H, W) bool`` saliency regions.

    Exactly one rule: ``std=k`` keeps ``x >= mean + k·std`` of each map (Shared Interest's
    default, k = 1); ``percentile=p`` keeps ``x >= the p-th percentile``; ``top_fraction=f``
    keeps the ``ceil(f·H·W)`` largest values (ties at the cut are kept); ``threshold=t`` keeps
    ``x >= t``.
    """
    rules = {"std": std, "percentile": percentile, "top_fraction": top_fraction, "threshold": threshold}
    chosen = {name: value for name, value in rules.items() if value is not None}
    if len(chosen) != 1:
        raise ValueError(f"binarize needs exactly one rule of {tuple(rules)}, got {tuple(chosen) or 'none'}")
    flat = maps.flatten(1).float()
    if std is not None:
        cut = flat.mean(dim=1) + std * flat.std(dim=1, unbiased=False)
    elif percentile is not None:
        cut = torch.quantile(flat, percentile / 100.0, dim=1)
    elif top_fraction is not None:
        count = max(1, min(flat.shape[1], math.ceil(top_fraction * flat.shape[1] - 1e-9)))
        cut = flat.topk(count, dim=1).values[:, -1]
    else:
        cut = torch.full((flat.shape[0],), float(chosen["threshold"]), device=flat.device)
    return (flat >= cut.unsqueeze(1)).view(maps.shape)
