"""Labelled images with ground-truth masks, from an ``.npz``, a folder or a Dataset factory.

A spec's data is a :class:`SampleSource`: it knows how many samples there are and reads any of
them on demand, as a :class:`SampleBatch` (one shard). Nothing reads the whole data set at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, first_line
from ..spec.schema import DataSpec, FolderSpec
from ..spec.validate import as_strings, read_labels_csv
from .imports import call_factory, resolve_callable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class SampleBatch:
    """Some samples of a data set (a shard), checked: ``indices (B,)`` long, their positions in
    the data set; images ``(B, C, H, W)`` float in [0, 1]; masks ``(B, H, W) bool``; labels
    ``(B,)`` long; extra named region masks ``(B, H, W) bool``; named per-sample fields ``(B,)``
    strings; ``skipped``: one line per sample left out (``data.on_bad_sample: skip``)."""

    indices: Tensor
    images: Tensor
    masks: Tensor
    labels: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

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


def open_source(spec: DataSpec, spec_dir: Path, search_paths: Sequence[Path]) -> SampleSource:
    """The :class:`SampleSource` a ``data:`` block names (its first ``limit`` samples). Opening
    reads only what is small: npz headers and ``(N,)`` arrays, the labels CSV, ``len(dataset)``."""
    if spec.npz is not None:
        from .npz import NpzSource

        return NpzSource(spec_dir / spec.npz, spec.npz, spec.limit, spec.scale)
    if spec.folder is not None:
        return FolderSource(spec_dir, spec.folder, spec.classes, spec.limit, spec.scale)
    assert spec.factory is not None
    from .dataset import DatasetSource

    where: Location = ("data", "factory")
    factory = resolve_callable(spec.factory, search_paths, where)
    return DatasetSource(call_factory(factory, dict(spec.kwargs), spec.factory, where), spec)


class FolderSource(SampleSource):
    """``data.folder``: the labels CSV is read when the source opens, the image and mask files
    of a shard when it is read."""

    location: Location = ("data", "folder")

    def __init__(
        self, spec_dir: Path, folder: FolderSpec, classes: Sequence[str] | None, limit: int | None, scale: float | None
    ) -> None:
        self.image_dir, self.mask_dir = spec_dir / folder.images, spec_dir / folder.masks
        self.folder, self.scale = folder, scale
        header, rows = read_labels_csv(spec_dir / folder.labels)
        rows = rows[:limit]
        for number, row in enumerate(rows, start=1):
            if len(row) < 2:
                raise SpecRuntimeError(
                    ("data", "folder", "labels"), f"{folder.labels} row {number} {row!r}: expected file,label"
                )
        if not rows:
            raise SpecRuntimeError(("data", "folder", "labels"), f"{folder.labels} lists no images")
        self.names = [row[0].strip() for row in rows]
        self.labels = np.asarray([_label_index(row[1].strip(), classes) for row in rows])
        self.fields = {  # the columns after file,label, named by the header
            name: as_strings([row[column].strip() if column < len(row) else "" for row in rows])
            for column, name in enumerate(header)
            if column >= 2
        }
        self._first: tuple[str, tuple[int, ...]] | None = None
        """The first image read and its shape: every other must have the same."""

    def __len__(self) -> int:
        return len(self.names)

    def read(self, indices: Sequence[int]) -> SampleBatch:
        indices = list(indices)
        images, masks = [], []
        for index in indices:
            image, mask = self._read_sample(self.names[index])
            images.append(image.transpose(2, 0, 1))
            masks.append(mask)
        chosen = np.asarray(indices, dtype=np.int64)
        return checked_batch(
            indices,
            np.stack(images) if images else np.zeros((0, 3, 1, 1), np.uint8),
            np.stack(masks) if masks else np.zeros((0, 1, 1), bool),
            self.labels[chosen],
            {},
            {name: values[chosen] for name, values in self.fields.items()},
            self.scale,
            self.location,
        )

    def _read_sample(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The image ``(H, W, 3)`` and mask ``(H, W) bool`` of the file ``name``, checked."""
        folder = self.folder
        candidates = [self.mask_dir / (Path(name).stem + suffix) for suffix in IMAGE_SUFFIXES]
        mask_path = next((candidate for candidate in candidates if candidate.exists()), None)
        if mask_path is None:
            raise SpecRuntimeError(("data", "folder", "masks"), f"no mask for {name} in {folder.masks}")
        image = _read_image(self.image_dir / name, f"{folder.images}/{name}", "RGB", ("data", "folder", "images"))
        mask = _read_image(mask_path, f"{folder.masks}/{mask_path.name}", "L", ("data", "folder", "masks")) > 0
        if self._first is None:
            self._first = (name, image.shape)
        elif image.shape != self._first[1]:
            first, shape = self._first
            raise SpecRuntimeError(
                ("data", "folder", "images"),
                f"{name} is {_size(image.shape)} but {first} is {_size(shape)}: "
                "the images of a folder must share one size (resize them)",
            )
        if mask.shape != image.shape[:2]:
            raise SpecRuntimeError(
                ("data", "folder", "masks"),
                f"{mask_path.name} is {_size(mask.shape)} but its image {name} is {_size(image.shape)}",
            )
        return image, mask


def _read_image(path: Path, shown: str, mode: str, where: Location) -> np.ndarray:
    """The image file at ``path`` as an array in ``mode`` (``(H, W, 3)`` for RGB, ``(H, W)`` for L)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except FileNotFoundError:
        raise SpecRuntimeError(where, f"{shown} is listed in the labels but does not exist") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:  # PIL's decoders raise all of these
        raise SpecRuntimeError(
            where, f"cannot read {shown}: {first_line(error)} (replace or remove the file)"
        ) from error


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"  # width x height, as image viewers say


def _label_index(label: str, classes: Sequence[str] | None) -> int:
    if label.lstrip("-").isdigit():
        return int(label)
    if classes and label in classes:
        return list(classes).index(label)
    raise SpecRuntimeError(("data", "folder", "labels"), f"label {label!r} is neither an index nor one of data.classes")


SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""The default ``data.scale`` of integer images; float images are taken as they are."""


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
