"""How concentrated a saliency map is, whatever the ground truth (docs/methods.md, "Complexity").

Both functions take ``(N, H, W)`` maps, use their absolute values and return ``(N,)`` float64
scores for the whole batch at once. Both are invariant to the map's scale. A map with no mass
(all zeros) is undefined: NaN.

- sparseness: the Gini index of ``|a|`` (Chalasani et al., "Concise Explanations of Neural
  Networks using Adversarial Training", ICML 2020);
- complexity: the entropy of ``|a|`` as a distribution over the pixels (Bhatt, Weller, Moura,
  "Evaluating and Aggregating Feature-based Model Explanations", IJCAI 2020).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["complexity", "sparseness"]


def _magnitudes(maps: Tensor) -> Tensor:
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, H, W), got {tuple(maps.shape)}")
    return maps.flatten(1).double().abs()


def sparseness(maps: Tensor) -> Tensor:
    """Gini index of ``|a|`` (Chalasani et al., ICML 2020): with the ``P`` values sorted ascending,
    ``G = Σ_i (2i − P − 1) · a_(i) / (P · Σ a)``. 0 for a flat map, ``1 − 1/P`` for a single
    pixel; higher is sparser.

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an all-zero map.
    """
    values = _magnitudes(maps).sort(dim=1).values
    p = values.shape[1]
    weights = 2 * torch.arange(1, p + 1, device=values.device, dtype=torch.float64) - p - 1
    total = values.sum(dim=1)
    gini = (values * weights).sum(dim=1) / (p * torch.where(total > 0, total, 1.0))
    return torch.where(total > 0, gini, math.nan)


def complexity(maps: Tensor) -> Tensor:
    """Entropy of the map as a distribution (Bhatt et al., IJCAI 2020): ``P_i = |a_i| / Σ |a|``,
    ``H = −Σ P_i ln P_i`` (``0 · ln 0 = 0``), in nats. 0 for a single pixel, ``ln P`` for a flat
    map; lower is simpler.

    ``(N, H, W)`` in, ``(N,)`` out; NaN for an all-zero map.
    """
    values = _magnitudes(maps)
    total = values.sum(dim=1, keepdim=True)
    share = values / torch.where(total > 0, total, 1.0)
    entropy = -torch.where(share > 0, share * share.clamp(min=1e-300).log(), 0.0).sum(dim=1)
    return torch.where(total.squeeze(1) > 0, entropy, math.nan)
