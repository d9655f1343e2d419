"""Detection and segmentation samples from an npz: one per object, or per (image, class) pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.objects import ObjectsNpzSource, bounding_boxes, box_masks
from pytest_saliency.spec.schema import SegmentationSpec


def write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_box_masks_take_the_pixels_whose_centre_is_inside_and_bounding_boxes_invert_them() -> None:
    masks = box_masks(np.array([[1.0, 2.0, 3.0, 5.0]]), 6, 6)
    assert masks[0].nonzero()[0].tolist() == [2, 2, 3, 3, 4, 4]
    assert bounding_boxes(masks).tolist() == [[1.0, 2.0, 3.0, 5.0]]


def test_objects_are_samples_in_image_order_with_their_instance_masks(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((3, 3, 8, 8)).astype(np.float32)
    instance = np.zeros((3, 8, 8), dtype=bool)
    instance[0, 0, 0] = instance[1, 1, 1] = instance[2, 2, 2] = True
    path = write(
        tmp_path / "d.npz",
        images=images,
        boxes=np.array([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], dtype=np.float32),
        box_labels=np.array([5, 6, 7]),
        box_images=np.array([2, 0, 2]),  # stored out of image order
        box_masks=instance,
        decoy=np.ones((3, 8, 8), dtype=bool),
    )
    source = ObjectsNpzSource(path, "d.npz", "detection", None, None, SegmentationSpec())
    batch = source.read([0, 1, 2])
    assert batch.labels.tolist() == [6, 5, 7]  # image 0's object first
    assert batch.images_of is not None and batch.images_of.tolist() == [0, 2, 2]
    assert torch.equal(batch.images[1], torch.from_numpy(images[2]))
    assert batch.masks[0, 1, 1] and batch.masks.sum().item() == 3  # each object's own instance mask
    assert batch.boxes is not None and batch.boxes[0].tolist() == [1, 1, 5, 5]
    assert set(batch.regions) == {"decoy"}
    assert len(ObjectsNpzSource(path, "d.npz", "detection", 2, None, SegmentationSpec())) == 2


def test_segmentation_pairs_leave_out_the_ignored_value_and_the_background(tmp_path: Path) -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, :2] = 1
    masks[0, 3, 3] = 255
    masks[1, :, :2] = 2
    masks[1, :, 2:] = 1
    path = write(tmp_path / "s.npz", images=np.zeros((2, 3, 4, 4), dtype=np.float32), masks=masks)
    source = ObjectsNpzSource(path, "s.npz", "segmentation", None, None, SegmentationSpec(background=0))
    batch = source.read(range(len(source)))
    assert batch.labels.tolist() == [1, 1, 2]
    assert batch.images_of is not None and batch.images_of.tolist() == [0, 1, 1]
    assert batch.masks.sum(dim=(1, 2)).tolist() == [8, 8, 8]
    assert batch.boxes is not None and batch.boxes[2].tolist() == [0, 0, 2, 4]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((1, 3, 4, 4))}, "has no array 'boxes'"),
        (
            {"images": np.zeros((1, 3, 4, 4)), "boxes": np.array([[2.0, 0, 1, 1]]), "box_labels": np.array([0]),
             "box_images": np.array([0])},
            "object 0 has box \\[2.0, 0.0, 1.0, 1.0\\]: boxes are x1, y1, x2, y2 with x1 < x2, y1 < y2",
        ),
        (
            {"images": np.zeros((1, 3, 4, 4)), "boxes": np.array([[0.0, 0, 1, 1]]), "box_labels": np.array([0]),
             "box_images": np.array([3])},
            "box_images must be image indices 0..0",
        ),
    ],
)  # fmt: skip
def test_bad_detection_data_is_one_line(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SpecRuntimeError, match=message):
        ObjectsNpzSource(path, "bad.npz", "detection", None, None, SegmentationSpec())


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_object_data_is_read_by_rows_a_chunk_of_masks_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: object
) -> None:
    import pytest_saliency.loaders.objects as objects

    monkeypatch.setattr(objects, "CHUNK_IMAGES", 2)  # five masks listed in three chunks
    masks = np.zeros((5, 4, 4), dtype=np.uint8)
    for image in range(5):
        masks[image, image % 4] = image + 1  # class image + 1 in row image % 4
    images = np.random.default_rng(1).random((5, 3, 4, 4)).astype(np.float32)
    save(tmp_path / "s.npz", images=images, masks=masks)  # type: ignore[operator]
    source = ObjectsNpzSource(tmp_path / "s.npz", "s.npz", "segmentation", None, None, SegmentationSpec(background=0))
    assert len(source) == 5
    batch = source.read([1, 3, 4])
    assert batch.labels.tolist() == [2, 4, 5]
    assert torch.equal(batch.images, torch.from_numpy(images[[1, 3, 4]]))
    assert torch.equal(batch.masks, torch.from_numpy(masks[[1, 3, 4]] > 0))
