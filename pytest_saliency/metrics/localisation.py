"""The localisation family: how much of a saliency map falls on the ground-truth object.

Every function takes ``(N, H, W)`` float maps ``a`` and ``(N, H, W)`` bool masks ``s`` and returns
``(N,)`` float64 scores, computed for the whole batch at once (no loop over images or pixels), so a
sample's score does not depend on the batch it is in. A sample whose mask is empty, or whose map
holds NaN, is undefined and scored NaN, never 0 and never a hit; so is a sample whose denominator
is zero (a map with no mass) and, for the pointing game, a constant map (it has no maximum to
point with).

Sources (docs/methods.md, "Localisation"):

- pointing game: Zhang et al., "Top-down Neural Attention by Excitation Backprop", IJCV 2018;
- attribution localisation: Kohlbrenner et al., "Towards Best Practice in Explaining Neural
  Network Decisions with LRP", IJCNN 2020;
- relevance mass and relevance rank accuracy: Arras, Osman, Samek, "CLEVR-XAI: A benchmark dataset
  for the ground truth evaluation of neural network explanations", Information Fusion 2022;
- top-k intersection: Theiner, Müller-Budack, Ewerth, "Interpretable Semantic Photo Geolocation",
  WACV 2022;
- ROC-AUC with the mask as labels (Fawcett, "An introduction to ROC analysis", 2006, as used by
  Quantus' ``AUC``);
- energy-based pointing game: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks", CVPR Workshops 2020.

Top-k style scores (relevance rank accuracy, top-k intersection) count pixels tied at the cut by
their share of the mask: the expected score over every order of the tied pixels, so a flat map
scores the mask's share of the image instead of whatever a sort happens to put first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .sanity import average_ranks

__all__ = [
    "POINTING_TOLERANCE",
    "attribution_localisation",
    "auc",
    "energy_pointing_game",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
]

POINTING_TOLERANCE = 15
"""Pixels around the mask within which the pointing game still counts a hit (Zhang et al.)."""


def _flat_pair(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(N, H, W)`` maps and masks as ``(N, H*W)`` float64 and bool, and the ``(N,)`` bool rows
    where every score is undefined: an empty mask, or a map holding NaN."""
    if maps.dim() != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both be (N, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}")
    flat, mask = maps.flatten(1).double(), masks.flatten(1).bool()
    return flat, mask, ~mask.any(dim=1) | flat.isnan().any(dim=1)


def _undefined_where(scores: Tensor, undefined: Tensor) -> Tensor:
    """``(N,)`` scores with NaN where the ``(N,)`` bool ``undefined`` is set."""
    return torch.where(undefined, math.nan, scores)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1.0), math.nan)


def _mass_inside(values: Tensor, inside: Tensor) -> Tensor:
    """``Σ_inside values / Σ values`` per row of ``(N, P)`` tensors (NaN for zero total mass)."""
    return _ratio((values * inside).sum(dim=1), values.sum(dim=1))


def _grow(masks: Tensor, radius: int) -> Tensor:
    """``(N, H, W) bool`` masks grown by a disc: True within ``radius`` pixels (Euclidean) of the
    mask. The disc is a stack of rows: row offset ``dy`` spans ``floor(sqrt(r² − dy²))`` columns
    either side. Each distinct span dilates the rows once (window counts from a cumulative sum),
    and the dilated rows are ORed in shifted by ``±dy``: ``O((2r + 1) · H · W)`` per image."""
    if radius == 0:
        return masks
    n, h, w = masks.shape
    padded = F.pad(masks.to(torch.int32), (radius + 1, radius, radius, radius))
    counts = padded.cumsum(dim=2)  # counts[.., p] = mask pixels at padded columns <= p
    grown = torch.zeros_like(masks)
    for dy in range(radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        reached = (
            counts[..., radius + 1 + half : radius + 1 + half + w] - counts[..., radius - half : radius - half + w]
        ) > 0
        grown |= reached[:, radius + dy : radius + dy + h]
        if dy:
            grown |= reached[:, radius - dy : radius - dy + h]
    return grown


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = POINTING_TOLERANCE) -> Tensor:
    """Pointing game (Zhang et al., IJCV 2018): 1 when the map's maximum lies on the mask or within
    ``tolerance`` pixels of it (Euclidean distance; the paper's 15 px by default), else 0.

    ``(N, H, W)`` maps and bool masks in, ``(N,)`` out. When several pixels share the maximum, one
    of them on the (grown) mask is a hit. NaN for an empty mask and for a constant map.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    grown = _grow(masks.bool(), tolerance)
    peak = flat == flat.amax(dim=1, keepdim=True)
    hit = (peak & grown.flatten(1)).any(dim=1).double()
    constant = flat.amin(dim=1) == flat.amax(dim=1)
    return _undefined_where(torch.where(constant, math.nan, hit), undefined)


def attribution_localisation(maps: Tensor, masks: Tensor) -> Tensor:
    """Attribution localisation (Kohlbrenner et al., IJCNN 2020): the positive attribution inside
    the mask over all positive attribution, ``Σ_s a⁺ / Σ a⁺``, in ``[0, 1]``.

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an empty mask or a map with no positive value.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    return _undefined_where(_mass_inside(flat.clamp(min=0), mask), undefined)


def relevance_mass_accuracy(maps: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass accuracy (Arras et al., Information Fusion 2022): ``Σ_s a / Σ a`` with the
    signed map (in ``[0, 1]`` for non-negative maps).

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an empty mask or a map summing to 0.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    return _undefined_where(_mass_inside(flat, mask), undefined)


def _top_hits(flat: Tensor, mask: Tensor, k: Tensor, cut: Tensor) -> Tensor:
    """``|top-k(a) ∩ s|`` per row for per-row counts ``k`` (``(N,)`` long, ``1 <= k <= P``) and
    the k-th largest value of each row ``cut`` (``(N, 1)``); pixels tied with the cut count by
    their share of the mask."""
    above, tied = flat > cut, flat == cut
    hits_above = (above & mask).sum(dim=1).double()
    still_needed = k.double() - above.sum(dim=1).double()
    tied_share = (tied & mask).sum(dim=1).double() / tied.sum(dim=1).double()
    return hits_above + still_needed * tied_share


def relevance_rank_accuracy(maps: Tensor, masks: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al., Information Fusion 2022): with ``K = |s|``, the share
    of the ``K`` highest-ranked pixels that lie on the mask, ``|top-K(a) ∩ s| / K``, in ``[0, 1]``.

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an empty mask. Ties at the cut: module docstring.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    size = mask.sum(dim=1).clamp(min=1)
    cut = flat.sort(dim=1, descending=True).values.gather(1, (size - 1).view(-1, 1))
    hits = _top_hits(flat, mask, size, cut)
    return _undefined_where(hits / size.double(), undefined)


def top_k_intersection(maps: Tensor, masks: Tensor, k: int) -> Tensor:
    """Top-k intersection (Theiner et al., WACV 2022): the share of the ``k`` highest-ranked
    pixels that lie on the mask, ``|top-k(a) ∩ s| / k``, in ``[0, 1]``.

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an empty mask. ``1 <= k <= H·W``. Ties at the cut:
    module docstring.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    if not 1 <= k <= flat.shape[1]:
        raise ValueError(f"k must be between 1 and the {flat.shape[1]} pixels of a map, got {k}")
    counts = torch.full((flat.shape[0],), k, dtype=torch.long, device=flat.device)
    cut = flat.topk(k, dim=1).values[:, -1:]
    return _undefined_where(_top_hits(flat, mask, counts, cut) / k, undefined)


def auc(maps: Tensor, masks: Tensor) -> Tensor:
    """ROC-AUC of the map as a score for the mask's pixels (Fawcett 2006; Quantus ``AUC``): the
    probability that a random mask pixel outscores a random pixel off the mask, ties counting one
    half, from the rank sum (Mann-Whitney U / (|s|·|¬s|)). In ``[0, 1]``, 0.5 for a flat map.

    ``(N, H, W)`` in, ``(N,)`` out; NaN when the mask is empty or covers the whole image.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    positives = mask.sum(dim=1).double()
    negatives = mask.shape[1] - positives
    rank_sum = (average_ranks(flat) * mask).sum(dim=1)
    u = rank_sum - positives * (positives + 1) / 2
    return _undefined_where(_ratio(u, positives * negatives), undefined)


def _bounding_boxes(masks: Tensor) -> Tensor:
    """``(N, H, W) bool``: the smallest axis-aligned box around each mask (empty for an empty mask)."""
    rows, columns = masks.any(dim=2), masks.any(dim=1)

    def span(present: Tensor) -> Tensor:
        length = present.shape[1]
        first = present.int().argmax(dim=1)
        last = length - 1 - present.flip(1).int().argmax(dim=1)
        index = torch.arange(length, device=present.device)
        inside = (index >= first.view(-1, 1)) & (index <= last.view(-1, 1))
        return inside & present.any(dim=1, keepdim=True)

    return span(rows).unsqueeze(2) & span(columns).unsqueeze(1)


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPRW 2020): the share of the map's
    positive energy inside the bounding box of the mask, ``Σ_box a⁺ / Σ a⁺``, in ``[0, 1]``
    (Score-CAM maps are non-negative; the positive part keeps a signed map in range).

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an empty mask or a map with no positive value.
    """
    flat, mask, undefined = _flat_pair(maps, masks)
    box = _bounding_boxes(masks.bool()).flatten(1)
    return _undefined_where(_mass_inside(flat.clamp(min=0), box), undefined)
