"""Small PNG thumbnails for the HTML report, encoded as base64 strings.

They are made where the tensors are (on the xdist worker that ran the check), so only a few
kilobytes of text travel back with each result:

- :func:`example_strip`: one sample as four panels side by side — the image, the saliency map
  over a grey copy of it, the ground-truth outline over it, and the binarised saliency region
  (white) with the ground-truth outline (green);
- :func:`segment_crop`: a ``patch × patch`` segment of an image (the drift clusters' examples).

Small images are scaled up by an integer factor with nearest-neighbour sampling (32×32 → 96×96)
so that pixels stay visible; large ones are scaled down to about :data:`PANEL` pixels.
:func:`with_thumbnails` gives a check item's outcome with them (:func:`attach` adds them to a copy
of its ``extra`` data).
"""

from __future__ import annotations

import base64
import copy
import io
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..memo import remembered
from .boxes import DrawnBoxes, draw

if TYPE_CHECKING:
    from ..checks.outcome import Outcome
    from ..loaders.source import SampleBatch
    from .results import DriftSummary, OutcomeExtra

PANEL = 96  # target side of one panel, pixels
CROP = 48  # target side of a drift segment crop
GAP = 2  # pixels between panels
GROUND_TRUTH_COLOUR = (0.15, 0.85, 0.25)
CROPS_PER_CLUSTER = 3

# "inferno"-like colour ramp for saliency (dark purple -> red -> yellow), linear between stops.
_RAMP = torch.tensor(
    [
        [0.00, 0.00, 0.02],
        [0.26, 0.04, 0.41],
        [0.58, 0.15, 0.40],
        [0.87, 0.32, 0.23],
        [0.99, 0.65, 0.04],
        [0.99, 1.00, 0.64],
    ]
)


def to_rgb(image: Tensor) -> Tensor:
    """``(C, H, W)`` image -> ``(H, W, 3)`` float in [0, 1]: 1 channel is grey, 3 are RGB,
    other counts show their mean. Values outside [0, 1] are min-max scaled for display."""
    image = image.detach().float().cpu()
    if image.dim() == 2:
        image = image[None]
    if image.shape[0] == 3:
        rgb = image
    else:
        rgb = image.mean(dim=0, keepdim=True).expand(3, -1, -1)
    low, high = float(rgb.min()), float(rgb.max())
    if low < 0.0 or high > 1.0:
        rgb = (rgb - low) / (high - low) if high > low else torch.zeros_like(rgb)
    return rgb.permute(1, 2, 0).clamp(0, 1).nan_to_num(0.0)


def colormap(values: Tensor) -> Tensor:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` colours of the saliency ramp."""
    scaled = values.detach().float().cpu().nan_to_num(0.0).clamp(0, 1) * (len(_RAMP) - 1)
    low = scaled.floor().long().clamp(max=len(_RAMP) - 2)
    weight = (scaled - low)[..., None]
    return _RAMP[low] * (1 - weight) + _RAMP[low + 1] * weight


def outline(mask: Tensor, width: int = 1) -> Tensor:
    """``(H, W) bool`` -> the mask's boundary: pixels in the mask within ``width`` pixels of one
    that is not (the image's border counts as outside)."""
    mask = mask.bool()
    outside = (~mask).float()[None, None]
    reach = 2 * width + 1
    near_outside = F.max_pool2d(F.pad(outside, (width,) * 4, value=1.0), reach, stride=1)[0, 0] > 0
    return mask & near_outside


def _resize(array: Tensor, side: int, nearest: bool) -> Tensor:
    """``(H, W, K)`` -> longest side about ``side``: integer nearest upscale when smaller,
    area (or nearest, for masks) downscale when larger."""
    height, width = array.shape[:2]
    longest = max(height, width)
    if longest < side:
        factor = max(1, side // longest)
        return array.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1)
    if longest == side:
        return array
    size = (max(1, round(height * side / longest)), max(1, round(width * side / longest)))
    chw = array.permute(2, 0, 1)[None].float()
    out = F.interpolate(chw, size=size, mode="nearest") if nearest else F.interpolate(chw, size=size, mode="area")
    return out[0].permute(1, 2, 0)


def _fit(mask: Tensor, height: int, width: int) -> Tensor:
    """A mask at the image's resolution (nearest), whatever its own."""
    if tuple(mask.shape) == (height, width):
        return mask.bool()
    return F.interpolate(mask.float()[None, None], size=(height, width), mode="nearest")[0, 0] > 0.5


def png_base64(rgb: Tensor) -> str:
    """``(H, W, 3)`` float in [0, 1] -> base64 of a PNG (no ``data:`` prefix); a rerun reads the
    PNG drawn before from the result cache (:mod:`pytest_saliency.memo`)."""
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    (encoded,) = remembered("png", [pixels], {}, lambda: [torch.frombuffer(bytearray(_png(pixels)), dtype=torch.uint8)])
    return base64.b64encode(encoded.numpy().tobytes()).decode("ascii")


def _png(rgb: Tensor) -> bytes:
    """``(H, W, 3)`` uint8 -> the bytes of a PNG."""
    from PIL import Image

    pixels = rgb.numpy()
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels)
    # A 256-colour palette (no dithering) keeps a thumbnail about a third smaller than RGB; images
    # with fewer colours, like the tiny test images, stay exact.
    picture = picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def example_strip(
    image: Tensor, saliency: Tensor, mask: Tensor, region: Tensor, panel: int = PANEL, boxes: DrawnBoxes | None = None
) -> str:
    """The four panels of one sample (see the module doc) as one base64 PNG.

    ``image`` ``(C, H, W)``; ``saliency`` ``(H, W)`` normalised to [0, 1]; ``mask`` and
    ``region`` ``(H, W) bool`` (a mask at another resolution is resized, nearest); ``boxes``: a
    detection sample's boxes, drawn over the image (:mod:`.boxes`)."""
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    mask, region = _fit(mask, height, width), _fit(region, height, width)
    saliency = saliency.detach().float().cpu().nan_to_num(0.0).clamp(0, 1)
    if tuple(saliency.shape) != (height, width):
        saliency = F.interpolate(saliency[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    grey = rgb.mean(dim=2, keepdim=True).expand(-1, -1, 3)
    alpha = (0.15 + 0.85 * saliency)[..., None]  # the image shows through where saliency is low
    overlay = grey * 0.8 * (1 - alpha) + colormap(saliency) * alpha
    colour = torch.tensor(GROUND_TRUTH_COLOUR)
    panels = [_resize(rgb, panel, nearest=True), _resize(overlay, panel, nearest=True)]
    if boxes is not None:
        panels[0] = draw(panels[0], boxes, panels[0].shape[0] / height)
    # Outlines are drawn at the panel's resolution, so they stay one screen pixel thin-ish.
    big_mask = _resize(mask[..., None].float(), panel, nearest=True)[..., 0] > 0.5
    edge = outline(big_mask, width=2 if big_mask.shape[0] >= 64 else 1)[..., None]
    panels.append(torch.where(edge, colour, panels[0] * 0.85))
    big_region = _resize(region[..., None].float(), panel, nearest=True)[..., 0] > 0.5
    binary = torch.where(big_region[..., None], torch.ones(3), torch.full((3,), 0.12))
    panels.append(torch.where(edge, colour, binary))
    return png_base64(_hstack(panels))


def segment_crop(image: Tensor, row: int, column: int, patch: int, side: int = CROP) -> str:
    """The ``patch × patch`` segment at segment-grid ``(row, column)`` of ``image`` ``(C, H, W)``."""
    rgb = to_rgb(image)
    crop = rgb[row * patch : (row + 1) * patch, column * patch : (column + 1) * patch]
    if crop.numel() == 0:
        crop = torch.zeros(1, 1, 3)
    return png_base64(_resize(crop, side, nearest=True))


def _hstack(panels: list[Tensor]) -> Tensor:
    height = max(p.shape[0] for p in panels)
    white = torch.ones(height, GAP, 3)
    parts: list[Tensor] = []
    for index, panel in enumerate(panels):
        if panel.shape[0] < height:
            panel = torch.cat([panel, torch.ones(height - panel.shape[0], panel.shape[1], 3)])
        parts += [white, panel] if index else [panel]
    return torch.cat(parts, dim=1)


# --- attaching thumbnails to a result ---------------------------------------------------------


ReadSamples = Callable[[list[int], bool], "tuple[SampleBatch, Tensor | None, Tensor | None]"]
"""``read(indices, with_maps)`` -> the samples at data-set ``indices`` and, with ``with_maps``,
their saliency maps ``(K, H, W)`` and binarised regions ``(K, H, W) bool`` (else None)."""


def with_thumbnails(outcome: Outcome, read: ReadSamples) -> Outcome:
    """``outcome`` with thumbnails in a copy of its ``extra`` data (:func:`attach`)."""
    extra = copy.deepcopy(outcome.extra)
    attach(extra, read)
    return replace(outcome, extra=extra)


def attach(extra: OutcomeExtra, read: ReadSamples) -> None:
    """Add thumbnails to one item's ``extra`` data, in place; the few samples they show are read
    again with ``read`` (the pass keeps no images):

    - each row of ``extra["worst"]`` (the worst examples a Shared Interest or patterns check
      chose) gets ``thumbnail``: :func:`example_strip` of that sample, with its saliency;
    - each drift cluster with ``representatives`` (``[image, segment]`` pairs) gets ``crops``:
      :func:`segment_crop` of its first few representatives.
    """
    worst = extra.get("worst")
    if worst:
        from ..metrics.saliency import normalize_maps

        batch, maps, regions = read([int(row["index"]) for row in worst], True)
        if maps is not None and regions is not None:
            position = {int(index): at for at, index in enumerate(batch.indices.tolist())}
            for row in worst:
                at = position.get(int(row["index"]))
                if at is None:
                    continue
                normalised, _ = normalize_maps(maps[at : at + 1])
                drawn = None if batch.drawn_boxes is None else batch.drawn_boxes[at]
                row["thumbnail"] = example_strip(
                    batch.images[at], normalised[0], batch.masks[at], regions[at], boxes=drawn
                )
    drift = extra.get("drift")
    patch = None if drift is None else _patch(drift)
    if drift is None or patch is None:
        return
    clusters = drift["clusters"]
    shown = [
        (pair[0], pair[1])
        for cluster in clusters
        for pair in (cluster.get("representatives") or [])[:CROPS_PER_CLUSTER]
    ]
    if not shown:
        return
    batch, _, _ = read(sorted({image for image, _ in shown}), False)
    position = {int(index): at for at, index in enumerate(batch.indices.tolist())}
    columns = math.ceil(batch.images.shape[3] / patch)
    for cluster in clusters:
        crops = []
        for pair in (cluster.get("representatives") or [])[:CROPS_PER_CLUSTER]:
            at, segment = position.get(int(pair[0])), int(pair[1])
            if at is not None:
                grid_row, grid_column = divmod(segment, columns)
                crops.append(segment_crop(batch.images[at], grid_row, grid_column, patch))
        if crops:
            cluster["crops"] = crops


def _patch(drift: DriftSummary) -> int | None:
    """The side of the drift segments, when they were a grid."""
    patch = drift["settings"].get("segments", {}).get("patch")
    return patch if patch is not None and patch > 0 else None
