"""D-RISE: equal to an independent loop over its masks, and independent of batches and shards."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pytest_saliency.metrics.drise import drise, drise_masks


def detector(images: Tensor) -> list[dict[str, Tensor]]:
    """Two detections per image whose scores depend on the pixels they cover."""
    output = []
    for image in images:
        left, right = image[:, :, :6].mean(), image[:, :, 6:].mean()
        output.append(
            {
                "boxes": torch.tensor([[0.0, 0.0, 6.0, 12.0], [6.0, 0.0, 12.0, 12.0]]),
                "labels": torch.tensor([0, 1]),
                "scores": torch.stack([left, right]),
                "probabilities": torch.stack([torch.stack([left, 1 - left]), torch.stack([1 - right, right])]),
            }
        )
    return output


def independent(
    image: Tensor, box: Tensor, label: int, index: int, n_masks: int, seed: int, probabilities: bool
) -> Tensor:
    """D-RISE written out: for each mask, the best IoU x (cosine or score) over the detections."""
    masks = drise_masks(index, n_masks, 4, 0.5, (12, 12), seed)
    total = torch.zeros(12, 12)
    for mask in masks:
        best = 0.0
        for found in detector((image * mask).unsqueeze(0)):
            for k in range(len(found["labels"])):
                b = found["boxes"][k]
                inter = max(0.0, min(b[2], box[2]) - max(b[0], box[0])) * max(
                    0.0, min(b[3], box[3]) - max(b[1], box[1])
                )
                union = (b[2] - b[0]) * (b[3] - b[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
                iou = float(inter / union)
                if probabilities:
                    vector = found["probabilities"][k]
                    agreement = float(vector[label] / vector.norm())
                else:
                    agreement = float(found["scores"][k]) if int(found["labels"][k]) == label else 0.0
                best = max(best, iou * agreement)
        total += best * mask
    return total / n_masks


@pytest.mark.parametrize("probabilities", [True, False])
def test_drise_equals_a_loop_over_its_masks(probabilities: bool) -> None:
    image = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    box = torch.tensor([[0.0, 0.0, 6.0, 11.0]])

    def detect(images: Tensor) -> list[dict[str, Tensor]]:
        found = detector(images)
        if not probabilities:
            for item in found:
                del item["probabilities"]
        return found

    maps = drise(detect, image, box, torch.tensor([0]), [5], n_masks=40, cells=4, batch_size=16, seed=7)
    expected = independent(image[0], box[0], 0, 5, 40, 7, probabilities)
    assert torch.allclose(maps[0], expected, atol=1e-6)
    assert maps[0, :, :6].mean() > maps[0, :, 6:].mean()  # the left object's evidence is on the left


def test_drise_does_not_depend_on_the_batch_or_the_other_samples() -> None:
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    objects = images[[0, 0, 1]]  # two objects of image 0, one of image 1
    boxes = torch.tensor([[0.0, 0.0, 6.0, 12.0], [6.0, 0.0, 12.0, 12.0], [0.0, 0.0, 6.0, 12.0]])
    labels = torch.tensor([0, 1, 0])
    whole = drise(detector, objects, boxes, labels, [10, 10, 11], n_masks=30, cells=4, batch_size=30, seed=1)
    small = drise(detector, objects, boxes, labels, [10, 10, 11], n_masks=30, cells=4, batch_size=7, seed=1)
    alone = drise(detector, objects[1:2], boxes[1:2], labels[1:2], [10], n_masks=30, cells=4, batch_size=4, seed=1)
    assert torch.allclose(whole, small, atol=1e-6)
    assert torch.allclose(whole[1], alone[0], atol=1e-6)
    assert not torch.allclose(whole[0], whole[2])  # another image draws other masks


def test_masks_are_seeded_per_image() -> None:
    first = drise_masks(3, 5, 4, 0.5, (10, 9), seed=0)
    assert first.shape == (5, 10, 9)
    assert torch.equal(first, drise_masks(3, 5, 4, 0.5, (10, 9), seed=0))
    assert not torch.equal(first, drise_masks(4, 5, 4, 0.5, (10, 9), seed=0))
    assert bool(((first >= -1e-6) & (first <= 1 + 1e-6)).all())
