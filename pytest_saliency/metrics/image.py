"""Image operations on ``(N, C, H, W)`` batches: the Gaussian blur (the fidelity check's ``blur``
fill and the ``baseline: blur`` reference input) and the Sobel edge map (``method: edge``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLUR_SIGMA", "edge_map", "gaussian_blur"]

#: Standard deviation (pixels) of the Gaussian used by the ``"blur"`` fill.
BLUR_SIGMA: float = 3.0


def gaussian_blur(images: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` images, ``2 * ceil(3 sigma) + 1`` taps,
    replicate padding (any image size works)."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = (taps / taps.sum()).to(device=images.device, dtype=images.dtype)
    n, c, h, w = images.shape
    flat = images.reshape(n * c, 1, h, w)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
    flat = F.conv2d(flat, taps.view(1, 1, 1, -1))
    flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
    flat = F.conv2d(flat, taps.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def edge_map(images: Tensor) -> Tensor:
    """Sobel gradient magnitude of each channel of ``(N, C, H, W)`` images (replicate padding),
    ``(N, C, H, W)``: an "explanation" that ignores the model, which a parameter randomisation
    test must reject (Adebayo et al. 2018, Fig. 1's edge detector)."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=images.dtype, device=images.device)
    derive = torch.tensor([-1.0, 0.0, 1.0], dtype=images.dtype, device=images.device)
    n, c, h, w = images.shape
    flat = F.pad(images.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    kernels = torch.stack([torch.outer(smooth, derive), torch.outer(derive, smooth)]).unsqueeze(1)
    gradients = F.conv2d(flat, kernels)
    return gradients.square().sum(dim=1).sqrt().reshape(n, c, h, w)
