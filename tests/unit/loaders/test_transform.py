"""data.transform: the image and its masks move together (docs/spec.md, "data.transform")."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torchvision import tv_tensors
from torchvision.transforms import v2

from pytest_saliency.loaders.transform import apply, output_size
from pytest_saliency.spec.schema import TransformSpec


def box_mask(size: tuple[int, int], top: int, left: int, bottom: int, right: int) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize(
    "spec",
    [
        TransformSpec(resize=24),
        TransformSpec(resize=[30, 45]),
        TransformSpec(resize=24, center_crop=20),
        TransformSpec(center_crop=[30, 50]),
    ],
    ids=["resize-short-side", "resize-hw", "resize-crop", "crop-larger-than-image"],
)
def test_a_box_mask_follows_the_transformed_box(spec: TransformSpec) -> None:
    """The box's mask after the transform is the transformed box's (torchvision's BoundingBoxes
    through the same steps) up to one pixel along its edges."""
    size, (top, left, bottom, right) = (48, 64), (8, 12, 40, 36)
    image = torch.rand(3, *size)
    transformed_image, masks = apply(spec, image, {"gt": box_mask(size, top, left, bottom, right)})
    box = tv_tensors.BoundingBoxes([[left, top, right, bottom]], format="XYXY", canvas_size=size)
    steps = [v2.Resize(spec.resize if isinstance(spec.resize, int) else list(spec.resize))] if spec.resize else []
    steps += (
        [v2.CenterCrop(spec.center_crop if isinstance(spec.center_crop, int) else list(spec.center_crop))]
        if spec.center_crop
        else []
    )
    moved = v2.Compose(steps)(box)
    x0, y0, x1, y1 = moved[0].tolist()
    height, width = moved.canvas_size
    assert tuple(transformed_image.shape) == (3, height, width) == (3, *output_size(spec, size))
    expected = box_mask((height, width), round(y0), round(x0), round(y1), round(x1))
    mask = masks["gt"]
    assert mask.dtype == torch.bool and tuple(mask.shape) == (height, width)
    differs = (mask ^ expected).nonzero()
    edge = (differs[:, 0] - y0).abs().lt(1.5) | (differs[:, 0] - y1).abs().lt(1.5)
    edge |= (differs[:, 1] - x0).abs().lt(1.5) | (differs[:, 1] - x1).abs().lt(1.5)
    assert bool(edge.all()), "only edge pixels may differ"
    assert abs(int(mask.sum()) - int(expected.sum())) <= (height + width)


def test_pad_to_centres_the_image_and_its_masks() -> None:
    image, mask = torch.ones(3, 4, 6), torch.ones(4, 6, dtype=torch.bool)
    padded, masks = apply(TransformSpec(pad_to=[8, 9]), image, {"gt": mask, "decoy": ~mask})
    assert padded.shape == (3, 8, 9)
    assert padded[0].nonzero().min(0).values.tolist() == [2, 1] and padded[0].nonzero().max(0).values.tolist() == [5, 6]
    assert torch.equal(masks["gt"], padded[0].bool()) and not masks["decoy"].any()


def test_images_are_antialiased_and_masks_stay_binary() -> None:
    """A checkerboard shrunk by 4 becomes its mean (antialiasing), a mask stays True/False."""
    board = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2
    image, masks = apply(TransformSpec(resize=[16, 16]), board.float().expand(3, 64, 64), {"gt": board.bool()})
    assert torch.allclose(image, torch.full_like(image, 0.5), atol=0.02)
    assert masks["gt"].dtype == torch.bool


def test_no_transform_returns_the_inputs() -> None:
    image, mask = torch.rand(3, 5, 7), torch.zeros(5, 7, dtype=torch.bool)
    assert apply(None, image, {"gt": mask}) == (image, {"gt": mask})


def test_transform_keys_are_checked() -> None:
    with pytest.raises(ValidationError, match="give at least one of resize, center_crop, pad_to"):
        TransformSpec()
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TransformSpec.model_validate({"resize": 8, "crop": 4})
    with pytest.raises(ValidationError, match="at least 2 items"):
        TransformSpec.model_validate({"pad_to": [8]})
