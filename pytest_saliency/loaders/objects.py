"""Detection and segmentation data from an ``.npz`` (``task: detection | segmentation``): a sample
is one ground-truth object, or one (image, class present in its mask) pair (docs/spec.md, "Tasks").

The file holds ``images`` ``(N, C, H, W)`` and, for detection, the objects ``boxes`` ``(M, 4)``
(x1, y1, x2, y2 in pixels), ``box_labels`` ``(M,)`` and ``box_images`` ``(M,)`` (the image of each),
with ``box_masks`` ``(M, H, W)`` (instance masks) where there are some; for segmentation, ``masks``
``(N, H, W)`` class indices. Any other ``(N, H, W)`` member is a named extra mask of each image
(``region: {mask: ...}``). A sample's ground truth is its object's mask (else its box), or the
class's pixels; its label is the object's or region's class. Opening reads the objects' boxes,
labels and images (or lists each mask's classes, a chunk of masks at a time); images, masks and
extra masks are read by rows, a shard's images at a time, as :mod:`.npz` reads classification data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import Location, SpecRuntimeError
from ..spec.schema import SegmentationSpec
from .npz import NpzSource, _Handles, _read_errors, _runs
from .source import SampleBatch, checked_batch

DETECTION_MEMBERS = ("boxes", "box_labels", "box_images", "box_masks")
CHUNK_IMAGES = 256
"""Masks read at a time when a segmentation npz opens and lists its (image, class) pairs."""


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(M, 4)`` boxes x1, y1, x2, y2 -> ``(M, H, W) bool``: the pixels whose centre lies in the box."""
    ys = np.arange(height)[None, :, None] + 0.5
    xs = np.arange(width)[None, None, :] + 0.5
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """``(M, H, W) bool`` non-empty masks -> ``(M, 4)`` float32 boxes x1, y1, x2, y2 around them."""
    rows, cols = np.any(masks, axis=2), np.any(masks, axis=1)
    y1, x1 = rows.argmax(axis=1), cols.argmax(axis=1)
    y2 = masks.shape[1] - rows[:, ::-1].argmax(axis=1)
    x2 = masks.shape[2] - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


class ObjectsNpzSource(NpzSource):
    """The object (or class-region) samples of an ``.npz`` (its first ``limit``), ordered by image."""

    location: Location = ("data", "npz")

    def __init__(
        self,
        path: Path,
        shown: str,
        task: str,
        limit: int | None,
        scale: float | None,
        segmentation: SegmentationSpec,
    ) -> None:
        self.path, self.shown, self.task, self.scale = path, shown, task, scale
        self._running, self._checked = {}, set()
        with _read_errors(shown):
            self.members, self.columns = self._open()
        names = list(self.members)
        needed = ("images", "boxes", "box_labels", "box_images") if task == "detection" else ("images", "masks")
        for key in needed:
            if key not in names:
                raise SpecRuntimeError(
                    self.location,
                    f"{shown} has no array {key!r} (it has: {', '.join(names)}); task: {task} needs "
                    + ", ".join(needed),
                )
        images_shape = self.members["images"].shape
        self.count_images, self.height, self.width = images_shape[0], images_shape[-2], images_shape[-1]
        reserved = {*needed, *DETECTION_MEMBERS, "masks"}
        self.extra = [
            name for name in names
            if name not in reserved and self.members[name].shape == (self.count_images, self.height, self.width)
        ]  # fmt: skip
        with _Handles() as handles, _read_errors(shown):
            if task == "detection":
                self.image_of, self.label_of, self.box_of, self.stored_row = self._objects(handles)
            else:
                self.image_of, self.label_of, self.box_of = self._class_regions(segmentation, handles)
        self.count = min(len(self.image_of), limit or len(self.image_of))

    def _whole(self, name: str, handles: _Handles) -> np.ndarray:
        """The member ``name`` read whole (the small ones: boxes, labels, the images of the objects)."""
        if name in self.columns:
            return self.columns[name]
        member = self.members[name]
        return self._rows(member, [range(member.shape[0])] if member.shape else [], handles)

    def _objects(self, handles: _Handles) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(self._whole("boxes", handles), dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(self._whole("box_labels", handles)).reshape(-1).astype(np.int64)
        images = np.asarray(self._whole("box_images", handles)).reshape(-1).astype(np.int64)
        if not len(boxes) == len(labels) == len(images):
            raise SpecRuntimeError(
                self.location,
                f"{self.shown}: boxes ({len(boxes)}), box_labels ({len(labels)}) and box_images ({len(images)}) "
                "must have one row per object",
            )
        if len(images) and (images.min() < 0 or images.max() >= self.count_images):
            raise SpecRuntimeError(
                self.location, f"{self.shown}: box_images must be image indices 0..{self.count_images - 1}"
            )
        bad = ~((boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3]))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SpecRuntimeError(
                self.location,
                f"{self.shown}: object {row} has box {boxes[row].tolist()}: boxes are x1, y1, x2, y2 with x1 < x2, y1 < y2",
            )
        order = np.argsort(images, kind="stable")  # samples grouped by image
        return images[order], labels[order], boxes[order], order

    def _class_regions(
        self, settings: SegmentationSpec, handles: _Handles
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (image, class) pair of the masks, read ``CHUNK_IMAGES`` images at a time."""
        member = self.members["masks"]
        if member.shape != (self.count_images, self.height, self.width) or not np.issubdtype(member.dtype, np.integer):
            raise SpecRuntimeError(
                self.location,
                f"{self.shown}: masks must be (N, H, W) class indices matching the images, got {member.shape} "
                f"{member.dtype}",
            )
        skipped = {value for value in (settings.ignore_index, settings.background) if value is not None}
        images, labels, boxes = [], [], []
        for start in range(0, self.count_images, CHUNK_IMAGES):
            chunk = self._rows(member, [range(start, min(start + CHUNK_IMAGES, self.count_images))], handles)
            for image, mask in enumerate(chunk, start=start):
                for label in np.unique(mask).tolist():
                    if label in skipped:
                        continue
                    images.append(image)
                    labels.append(label)
                    boxes.append(bounding_boxes((mask == label)[None])[0])
        if any(label < 0 for label in labels):
            raise SpecRuntimeError(
                self.location, f"{self.shown}: masks hold negative classes: set segmentation.ignore_index to that value"
            )
        return (
            np.asarray(images, dtype=np.int64),
            np.asarray(labels, dtype=np.int64),
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        )

    def _read(self, indices: list[int], handles: _Handles) -> SampleBatch:
        rows = np.asarray(indices, dtype=np.int64)
        images_of = self.image_of[rows]
        needed, position = np.unique(images_of, return_inverse=True)
        runs = _runs(needed.tolist())
        with _read_errors(self.shown):
            images = self._rows(self.members["images"], runs, handles)[position]
            if self.task == "detection" and "box_masks" in self.members:
                stored = self.stored_row[rows]
                order = np.argsort(stored)
                masks = np.empty((len(rows), self.height, self.width), dtype=bool)
                masks[order] = self._rows(self.members["box_masks"], _runs(stored[order].tolist()), handles) != 0
            elif self.task == "detection":
                masks = box_masks(self.box_of[rows], self.height, self.width)
            else:
                masks = self._rows(self.members["masks"], runs, handles)[position] == self.label_of[rows, None, None]
            regions = {name: self._rows(self.members[name], runs, handles)[position] for name in self.extra}
        batch = checked_batch(rows.tolist(), images, masks, self.label_of[rows], regions, {}, self.scale, self.location)
        batch.boxes = torch.from_numpy(self.box_of[rows])
        batch.images_of = torch.from_numpy(images_of)
        return batch
