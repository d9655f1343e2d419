"""``data.transform``: one geometry for an image, its ground truth and its extra masks.

torchvision's ``transforms.v2`` moves an image and its masks together when they are wrapped as
``tv_tensors`` (``Image``: antialiased bilinear; ``Mask``: nearest), so a box or a mask stays on
the pixels it marked. The steps run in the order resize, center_crop, pad_to (docs/spec.md);
``crop_pct`` (timm's rule) stands for a resize of the shorter side to ``floor(crop / crop_pct)``.
``transform: auto`` is replaced by the model source's transform before any image is read
(:mod:`.preprocessing`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ..spec.schema import TransformSpec

if TYPE_CHECKING:
    from torchvision.transforms import v2


def apply(
    spec: TransformSpec | Literal["auto"] | None, image: Tensor, masks: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """``image (C, H, W)`` float and ``masks {name: (H, W) bool}`` after ``spec`` (unchanged
    without one): ``(C, H', W')`` float and ``{name: (H', W') bool}``."""
    spec = _resolved(spec)
    if spec is None:
        return image, masks
    from torchvision import tv_tensors

    names = list(masks)
    stacked = torch.stack([masks[name] for name in names]).to(torch.uint8) if names else None
    transform = _composed(spec, image.shape[-2:])
    if stacked is None:
        return transform(tv_tensors.Image(image)).as_subclass(Tensor), {}
    out_image, out_masks = transform(tv_tensors.Image(image), tv_tensors.Mask(stacked))
    out_masks = out_masks.as_subclass(Tensor).bool()
    return out_image.as_subclass(Tensor).clamp(0, 1), {name: out_masks[i] for i, name in enumerate(names)}


def apply_boxes(spec: TransformSpec | Literal["auto"] | None, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``boxes (K, 4)`` x1, y1, x2, y2 in pixels of an image of ``size`` ``(H, W)``, moved as
    :func:`apply` moves that image: scaled by a resize, shifted by a crop or a pad, clipped to the
    output (a box cropped away has no width or height left)."""
    spec = _resolved(spec)
    if spec is None:
        return boxes
    from torchvision import tv_tensors

    wrapped = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
    moved: Tensor = _composed(spec, torch.Size(size))(wrapped)
    return moved.as_subclass(Tensor)


def output_size(spec: TransformSpec | Literal["auto"] | None, size: tuple[int, int]) -> tuple[int, int]:
    """The ``(H, W)`` an image of ``size`` has after ``spec`` (what :func:`apply` returns)."""
    spec = _resolved(spec)
    height, width = size
    if spec is None:
        return height, width
    resize = resize_of(spec)
    if resize is not None:
        height, width = _resized((height, width), resize)
    if spec.center_crop is not None:
        height, width = _pair(spec.center_crop)
    if spec.pad_to is not None:
        height, width = max(height, spec.pad_to[0]), max(width, spec.pad_to[1])
    return height, width


def resize_of(spec: TransformSpec) -> int | list[int] | None:
    """The resize ``spec`` makes: its ``resize``, or ``floor(center_crop / crop_pct)`` per side
    (an int for a square crop: the shorter side) with ``crop_pct``."""
    if spec.crop_pct is None or spec.center_crop is None:
        return spec.resize
    if isinstance(spec.center_crop, int):
        return math.floor(spec.center_crop / spec.crop_pct)
    return [math.floor(side / spec.crop_pct) for side in spec.center_crop]


def _resolved(spec: TransformSpec | Literal["auto"] | None) -> TransformSpec | None:
    if spec == "auto":
        raise ValueError("data.transform: auto must be resolved from the model source first (preprocessing)")
    return spec


def _resized(size: tuple[int, int], resize: int | list[int]) -> tuple[int, int]:
    """torchvision's rule: an int sets the shorter side, the longer one is scaled and truncated."""
    if not isinstance(resize, int):
        return resize[0], resize[1]
    height, width = size
    short, long = sorted((height, width))
    scaled = int(resize * long / short)
    return (resize, scaled) if height <= width else (scaled, resize)


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _padding(spec: TransformSpec, size: torch.Size) -> list[int]:
    """``[left, top, right, bottom]`` that centre an image of ``size`` (before the transform) on
    ``pad_to`` after resize and center_crop; 0 on a side already as large."""
    assert spec.pad_to is not None
    height, width = output_size(spec.model_copy(update={"pad_to": None}), (int(size[0]), int(size[1])))
    extra_h, extra_w = max(spec.pad_to[0] - height, 0), max(spec.pad_to[1] - width, 0)
    return [extra_w // 2, extra_h // 2, extra_w - extra_w // 2, extra_h - extra_h // 2]


def _composed(spec: TransformSpec, size: torch.Size) -> v2.Compose:
    """The steps of ``spec`` for an image of ``size`` (before the transform) as one callable."""
    from torchvision.transforms import v2

    steps = _steps(spec)
    if spec.pad_to is not None:
        steps = [*steps, v2.Pad(_padding(spec, size), fill=0)]
    return v2.Compose(steps)


def _steps(spec: TransformSpec) -> list[object]:
    from torchvision.transforms import v2

    steps: list[object] = []
    resize = resize_of(spec)
    if resize is not None:
        mode = v2.InterpolationMode(spec.interpolation)
        steps.append(v2.Resize(resize if isinstance(resize, int) else list(resize), interpolation=mode, antialias=True))
    if spec.center_crop is not None:
        steps.append(v2.CenterCrop(list(_pair(spec.center_crop))))
    return steps
