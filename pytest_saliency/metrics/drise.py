"""D-RISE (Petsiuk et al., CVPR 2021): black-box saliency of a detector for one object.

Random masks (RISE's: a coarse ``cells × cells`` grid of keep/drop cells with keep probability
``probability``, upsampled bilinearly and shifted by a random offset under one cell) are applied to
the image; each masked image's detections are compared with the object, and the saliency is the
masks' mean weighted by that similarity (docs/methods.md, "D-RISE"). The masks are drawn per image
from the spec's seed and the image's index, so every object of an image shares them and a map does
not depend on the batch or the shard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import box_iou
from .seeding import seeded_generator

SALT_DRISE = 0x81
"""Salt of the mask draws (:func:`~pytest_saliency.metrics.seeding.seeded_generator`)."""

Detect = Callable[[Tensor], Sequence[Mapping[str, Tensor]]]
"""``(B, C, H, W)`` images -> one dict of ``boxes``, ``labels``, ``scores`` (and optionally
``probabilities (K, classes)``) per image."""


def drise_masks(image: int, count: int, cells: int, probability: float, size: tuple[int, int], seed: int) -> Tensor:
    """``(count, H, W)`` float masks in ``[0, 1]`` of the image with index ``image``, seeded by
    ``seed`` and that index."""
    generator = seeded_generator(seed, SALT_DRISE, image)
    height, width = size
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grid = (torch.rand(count, 1, cells, cells, generator=generator) < probability).float()
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell_h, (count,), generator=generator)
    dx = torch.randint(0, cell_w, (count,), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None])[:, :, None]  # (count, H, 1)
    cols = (dx[:, None] + torch.arange(width)[None])[:, None, :]  # (count, 1, W)
    return up[torch.arange(count)[:, None, None], 0, rows, cols]


def similarity(found: Mapping[str, Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
    """``(S,)``: the largest similarity of a masked image's detections ``found`` with each object
    (``boxes (S, 4)``, ``labels (S,)``): IoU × the cosine of the detection's class-probability
    vector with the object's one-hot class where the detector gives ``probabilities``, else IoU ×
    the detection's score when its label is the object's; 0 without detections."""
    if found["boxes"].shape[0] == 0:
        return boxes.new_zeros(boxes.shape[0])
    iou = box_iou(found["boxes"].float(), boxes.float())  # (K, S)
    if "probabilities" in found:
        probabilities = found["probabilities"].float()
        norms = probabilities.norm(dim=1, keepdim=True).clamp(min=torch.finfo(probabilities.dtype).tiny)
        width = probabilities.shape[1]
        agreement = (probabilities / norms)[:, labels.clamp(max=width - 1)] * (labels < width)  # (K, S)
    else:
        same = found["labels"].view(-1, 1) == labels.view(1, -1)
        agreement = torch.where(same, found["scores"].float().view(-1, 1), 0.0)
    best: Tensor = (iou * agreement).amax(dim=0)
    return best


def drise(
    detect: Detect,
    images: Tensor,
    boxes: Tensor,
    labels: Tensor,
    images_of: Sequence[int],
    *,
    n_masks: int = 1000,
    cells: int = 16,
    probability: float = 0.5,
    batch_size: int = 64,
    seed: int = 0,
) -> Tensor:
    """``(N, H, W)`` D-RISE maps of ``N`` objects: ``images (N, C, H, W)`` (each object's image),
    ``boxes (N, 4)`` x1, y1, x2, y2, ``labels (N,)``, ``images_of``: each one's image index (which
    seeds its masks; objects of one image share the masks and the masked images' detections).
    ``detect`` runs under ``torch.inference_mode`` in batches of ``batch_size`` masked images."""
    n, _, height, width = images.shape
    maps = torch.zeros(n, height, width, device=images.device)
    owners = torch.as_tensor(list(images_of), dtype=torch.long)
    for image in torch.unique(owners).tolist():
        rows = (owners == image).nonzero().view(-1).to(images.device)
        masks = drise_masks(image, n_masks, cells, probability, (height, width), seed).to(images.device)
        picture = images[rows[0]]
        with torch.inference_mode():
            for start in range(0, n_masks, batch_size):
                part = masks[start : start + batch_size]
                found = detect(picture.unsqueeze(0) * part.unsqueeze(1))
                weights = torch.stack([similarity(item, boxes[rows], labels[rows]) for item in found])  # (b, S)
                maps[rows] += torch.einsum("bs,bhw->shw", weights, part)
    return maps.clone() / n_masks
