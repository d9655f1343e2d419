r"""What every data source is: a :class:`SampleSource` that reads :class:`SampleBatch`\ es (shards)
on demand (nothing reads the whole data set at once), and :func:`checked_batch`, which turns the
arrays a source read into a checked batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError
from .readers import as_strings

if TYPE_CHECKING:
    from ..report.boxes import DrawnBoxes

SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""The default ``data.scale`` of integer images; float images are taken as they are."""


@dataclass
class SampleBatch:
    """Some samples of a data set (a shard), checked: ``indices (B,)`` long, their positions in
    the data set; images ``(B, C, H, W)`` float in [0, 1]; masks ``(B, H, W) bool``; labels
    ``(B,)`` long; extra named region masks ``(B, H, W) bool``; named per-sample fields ``(B,)``
    strings; ``skipped``: one line per sample left out (``data.on_bad_sample: skip``). Samples
    of detection and segmentation data (:mod:`.objects`) also have ``boxes`` ``(B, 4)`` float
    (an object's x1, y1, x2, y2; a class region's bounding box) and ``images_of`` ``(B,)`` long,
    the image each sample is of; ``drawn_boxes``: what a report's thumbnail of each draws (set
    when a report reads detection samples again)."""

    indices: Tensor
    images: Tensor
    masks: Tensor
    labels: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    boxes: Tensor | None = None
    images_of: Tensor | None = None
    drawn_boxes: list[DrawnBoxes] | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def pin_memory(self) -> SampleBatch:
        """This batch with its tensors in page-locked memory (what a DataLoader with
        ``pin_memory`` calls), for faster copies to a GPU."""
        return SampleBatch(
            self.indices.pin_memory(),
            self.images.pin_memory(),
            self.masks.pin_memory(),
            self.labels.pin_memory(),
            {name: mask.pin_memory() for name, mask in self.regions.items()},
            self.fields,
            self.skipped,
            None if self.boxes is None else self.boxes.pin_memory(),
            None if self.images_of is None else self.images_of.pin_memory(),
        )

    def to(self, device: torch.device) -> SampleBatch:
        """This batch with its tensors on ``device`` (indices and labels too)."""
        return SampleBatch(
            self.indices.to(device),
            self.images.to(device),
            self.masks.to(device),
            self.labels.to(device),
            {name: mask.to(device) for name, mask in self.regions.items()},
            self.fields,
            self.skipped,
            None if self.boxes is None else self.boxes.to(device),
            None if self.images_of is None else self.images_of.to(device),
        )

    def select(self, keep: Tensor, skipped: Sequence[str] = ()) -> SampleBatch:
        """The samples where ``keep`` ``(B,) bool`` holds, ``skipped`` lines added."""
        rows = keep.nonzero().view(-1)
        chosen = rows.cpu().numpy()
        return SampleBatch(
            self.indices[rows.to(self.indices.device)],
            self.images[rows.to(self.images.device)],
            self.masks[rows.to(self.masks.device)],
            self.labels[rows.to(self.labels.device)],
            {name: mask[rows.to(mask.device)] for name, mask in self.regions.items()},
            {name: values[chosen] for name, values in self.fields.items()},
            [*self.skipped, *skipped],
            None if self.boxes is None else self.boxes[rows.to(self.boxes.device)],
            None if self.images_of is None else self.images_of[rows.to(self.images_of.device)],
        )


class SampleSource(ABC):
    """A data set read lazily, shard by shard. ``location`` is the spec key it comes from
    (``("data", "npz")`` ...), for error messages."""

    location: Location = ("data",)

    @abstractmethod
    def __len__(self) -> int:
        """The number of samples (after ``data.limit``)."""

    @abstractmethod
    def read(self, indices: Sequence[int]) -> SampleBatch:
        """The samples at ``indices`` (ascending), checked."""

    def stream(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        """:meth:`read` of each shard in turn (a source may prefetch the next one meanwhile)."""
        for shard in shards:
            yield self.read(shard)


def checked_batch(
    indices: Sequence[int],
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    regions: dict[str, np.ndarray],
    fields: dict[str, np.ndarray],
    scale: float | None,
    where: Location,
) -> SampleBatch:
    """The samples at ``indices`` (their positions in the data set, as messages name them) as a
    checked :class:`SampleBatch`: images ``(B, C, H, W)`` or ``(B, H, W)`` numbers, finite and in
    ``[0, 1]`` after ``scale``; masks ``(B, H, W)`` or ``(B, 1, H, W)``; labels ``(B,)`` whole
    class indices; region masks ``(B, H, W)``; fields ``(B,)``. The arrays are freshly read: the
    images may be divided in place."""
    chosen = torch.as_tensor(list(indices), dtype=torch.long)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise SpecRuntimeError(where, f"images must be (N, C, H, W), got {images.shape}")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise SpecRuntimeError(where, f"images are {images.dtype}, not numbers: store them as float in [0, 1] or uint8")
    divisor = scale if scale is not None else SCALES.get(images.dtype, 1.0)
    floats = np.ascontiguousarray(images, dtype=np.float32)
    image_tensor = torch.from_numpy(floats)
    if divisor != 1.0:
        image_tensor.div_(divisor)
    _check_image_values(image_tensor, chosen, scale, images.dtype, where)
    count, height, width = image_tensor.shape[0], image_tensor.shape[2], image_tensor.shape[3]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != (count, height, width):
        raise SpecRuntimeError(
            where,
            f"masks {masks.shape} do not match images {tuple(image_tensor.shape)}: expected {(count, height, width)}",
        )
    labels = labels.reshape(-1)
    if labels.shape[0] != count:
        raise SpecRuntimeError(where, f"{labels.shape[0]} labels for {count} images")
    for key, values in fields.items():
        if len(values) != count:
            raise SpecRuntimeError(where, f"per-sample field {key!r} has {len(values)} values for {count} images")
    for key, region in regions.items():
        if tuple(region.shape) != (count, height, width):
            raise SpecRuntimeError(
                where, f"region mask {key!r} is {tuple(region.shape)}, expected {(count, height, width)}"
            )
    return SampleBatch(
        chosen,
        image_tensor,
        torch.from_numpy(np.ascontiguousarray(masks)).bool(),
        class_indices(labels, chosen, where),
        {key: torch.from_numpy(np.ascontiguousarray(region)).bool() for key, region in regions.items()},
        {key: as_strings(values) for key, values in fields.items()},
    )


def _check_image_values(images: Tensor, indices: Tensor, scale: float | None, dtype: np.dtype, where: Location) -> None:
    """Finite, and in ``[0, 1]`` (a small rounding margin allowed): anything else would pass
    every check silently with meaningless numbers, or fail deep inside the model. ``indices``:
    the samples' positions in the data set, for the message."""
    if not images.numel():
        return
    low, high = (float(bound) for bound in torch.aminmax(images))  # NaN if any is, inf if any is
    if not (np.isfinite(low) and np.isfinite(high)):  # only then the slower per-sample count
        bad = (~torch.isfinite(images)).flatten(1).any(dim=1)
        first = int(indices[bad.nonzero()[0]])
        raise SpecRuntimeError(
            where,
            f"images hold NaN or inf in {int(bad.sum())} of {images.shape[0]} samples (first: sample {first}): "
            "clean or drop those images",
        )
    if low >= -1e-3 and high <= 1 + 1e-3:
        return
    shown = f"[{low:.4g}, {high:.4g}]"
    if scale is not None:
        fix = f"data.scale: {scale:g} leaves them in {shown}: give the scale that brings them into [0, 1]"
    elif low < 0:
        fix = (
            f"images range over {shown}, outside [0, 1]: if they are already normalised, store them "
            "unnormalised in [0, 1] and give the normalisation as model.normalize"
        )
    else:
        suggested = 255 if high <= 255 else 65535 if high <= 65535 else high
        fix = (
            f"{dtype} images range over {shown}, outside [0, 1]: store them as uint8, "
            f"or set data.scale: {suggested:g} to divide them"
        )
    raise SpecRuntimeError(where, fix)


def class_indices(labels: np.ndarray, indices: Tensor, where: Location) -> Tensor:
    """``(B,)`` long class indices from integer (or integral float) labels, else an error naming
    the sample by its position in ``indices`` ``(B,)``."""
    if labels.dtype == np.bool_:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.number):
        raise SpecRuntimeError(where, f"labels are {labels.dtype}: store integer class indices (0, 1, ...)")
    if not np.issubdtype(labels.dtype, np.integer):
        finite = np.isfinite(labels)
        fractional = ~finite | (np.where(finite, labels, 0) % 1 != 0)
        if fractional.any():
            index = int(np.flatnonzero(fractional)[0])
            raise SpecRuntimeError(
                where,
                f"labels must be integer class indices, got {labels[index]:g} (sample {int(indices[index])}): "
                "store class indices 0, 1, ...",
            )
    if labels.size and labels.min() < 0:
        index = int(np.argmin(labels))
        raise SpecRuntimeError(
            where,
            f"label {labels[index]:g} (sample {int(indices[index])}) is negative: labels are class indices 0, 1, ...",
        )
    return torch.from_numpy(labels.astype(np.int64))
