"""Labelled images with ground-truth masks, from an ``.npz``, a folder or a Dataset factory.

A spec's data is a :class:`SampleSource`: it knows how many samples there are and reads any of
them on demand, as a :class:`SampleBatch` (one shard). Nothing reads the whole data set at once.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, first_line, model_stage
from ..spec.schema import DataSpec
from ..spec.validate import as_strings
from .imports import call_factory, resolve_callable
from .source import SCALES, SampleBatch, SampleSource


class ArraySource(SampleSource):
    """A data set already in memory (:class:`SaliencyData`)."""

    def __init__(self, data: SaliencyData) -> None:
        self.data = data
        self.location = data.location

    def __len__(self) -> int:
        return len(self.data)

    def read(self, indices: Sequence[int]) -> SampleBatch:
        chosen = torch.as_tensor(list(indices), dtype=torch.long)
        data = self.data
        return SampleBatch(
            chosen,
            data.images[chosen],
            data.masks[chosen],
            data.labels[chosen],
            {name: mask[chosen] for name, mask in data.regions.items()},
            {name: values[chosen.numpy()] for name, values in data.fields.items()},
        )


def open_source(spec: DataSpec, spec_dir: Path, search_paths: Sequence[Path]) -> SampleSource:
    """The :class:`SampleSource` a ``data:`` block names."""
    from . import annotated

    if spec.folder is not None:
        return annotated.folder_source(spec, spec_dir)
    if spec.imagefolder is not None:
        return annotated.imagefolder_source(spec, spec_dir)
    if spec.coco is not None:
        return annotated.coco_source(spec, spec_dir)
    return ArraySource(load_data(spec, spec_dir, search_paths))


@dataclass
class SaliencyData:
    """Images ``(N, C, H, W)`` float in [0, 1], masks ``(N, H, W) bool``, labels ``(N,)`` long,
    extra named region masks ``(N, H, W) bool`` (e.g. a decoy patch), all on the CPU, and named
    per-sample fields ``(N,)`` as strings (a hospital, a camera: what ``slices`` select by)."""

    images: Tensor
    masks: Tensor
    labels: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    location: Location = ("data",)
    """The spec key the samples come from (``("data", "npz")`` ...), for error messages."""
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_data(spec: DataSpec, spec_dir: Path, search_paths: Sequence[Path]) -> SaliencyData:
    """Load the data set a ``data:`` block names (its first ``limit`` samples), checked: finite
    images in ``[0, 1]`` after ``scale``, integer labels, masks the images' size."""
    if spec.npz is not None:
        where: Location = ("data", "npz")
        arrays = _from_npz(spec_dir / spec.npz, spec.npz, where)
    else:
        assert spec.factory is not None
        where = ("data", "factory")
        factory = resolve_callable(spec.factory, search_paths, where)
        arrays = _from_dataset(call_factory(factory, dict(spec.kwargs), spec.factory, where), spec.limit, where)
    return _to_tensors(arrays, spec.limit, spec.scale, where)


def _from_npz(path: Path, shown: str, where: Location) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated or corrupt members
        raise SpecRuntimeError(where, f"cannot read {shown}: {first_line(error)} (write the file again)") from error


def _from_dataset(dataset: object, limit: int | None, where: Location) -> dict[str, np.ndarray]:
    try:
        count = len(dataset)  # type: ignore[arg-type]  # whatever the factory returned: no __len__ raises TypeError
    except TypeError:
        raise SpecRuntimeError(where, "the data factory must return a Dataset with __len__ and __getitem__") from None
    count = min(count, limit) if limit else count
    columns: dict[str, list[np.ndarray]] = {"images": [], "masks": [], "labels": []}
    for index in range(count):
        with model_stage(where, f"reading sample {index} of the Dataset failed"):
            sample = dataset[index]  # type: ignore[index]  # a Dataset by duck typing, as torch's DataLoader takes it
        if not isinstance(sample, tuple | list) or len(sample) not in (3, 4):
            raise SpecRuntimeError(
                where, "each sample must be (image, mask, label) or (image, mask, label, {name: mask})"
            )
        columns["images"].append(np.asarray(sample[0]))
        columns["masks"].append(np.asarray(sample[1]))
        columns["labels"].append(np.asarray(sample[2]))
        for name, value in (sample[3] if len(sample) == 4 else {}).items():  # masks, or per-sample fields
            columns.setdefault(name, []).append(np.asarray(value))
    for key, values in columns.items():
        odd = next((i for i, value in enumerate(values) if value.shape != values[0].shape), None)
        if odd is not None:
            raise SpecRuntimeError(
                where,
                f"sample {odd}'s {key} is {values[odd].shape} but sample 0's is {values[0].shape}: "
                "every sample must have the same shape",
            )
    return {key: np.stack(values) for key, values in columns.items()}


def _to_tensors(arrays: dict[str, np.ndarray], limit: int | None, scale: float | None, where: Location) -> SaliencyData:
    images = arrays["images"][:limit]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise SpecRuntimeError(where, f"images must be (N, C, H, W), got {images.shape}")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise SpecRuntimeError(where, f"images are {images.dtype}, not numbers: store them as float in [0, 1] or uint8")
    divisor = scale if scale is not None else SCALES.get(images.dtype, 1.0)
    image_tensor = torch.from_numpy(np.ascontiguousarray(images).astype(np.float32)) / divisor
    _check_image_values(image_tensor, scale, images.dtype, where)
    count, height, width = image_tensor.shape[0], image_tensor.shape[2], image_tensor.shape[3]
    masks = arrays["masks"][:limit]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != (count, height, width):
        raise SpecRuntimeError(
            where,
            f"masks {masks.shape} do not match images {tuple(image_tensor.shape)}: expected {(count, height, width)}",
        )
    labels = arrays["labels"][:limit].reshape(-1)
    if labels.shape[0] != count:
        raise SpecRuntimeError(where, f"{labels.shape[0]} labels for {count} images")
    extra = {key: value[:limit] for key, value in arrays.items() if key not in ("images", "masks", "labels")}
    fields = {key: as_strings(value) for key, value in extra.items() if value.ndim == 1}
    for key, values in fields.items():
        if len(values) != count:
            raise SpecRuntimeError(where, f"per-sample field {key!r} has {len(values)} values for {count} images")
    regions = {
        key: torch.from_numpy(np.ascontiguousarray(value)).bool() for key, value in extra.items() if key not in fields
    }
    for key, region in regions.items():
        if tuple(region.shape) != (count, height, width):
            raise SpecRuntimeError(
                where, f"region mask {key!r} is {tuple(region.shape)}, expected {(count, height, width)}"
            )
    return SaliencyData(
        images=image_tensor,
        masks=torch.from_numpy(np.ascontiguousarray(masks)).bool(),
        labels=_class_indices(labels, where),
        regions=regions,
        location=where,
        fields=fields,
    )


def _check_image_values(images: Tensor, scale: float | None, dtype: np.dtype, where: Location) -> None:
    """Finite, and in ``[0, 1]`` (a small rounding margin allowed): anything else would pass
    every check silently with meaningless numbers, or fail deep inside the model."""
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = (~finite).flatten(1).any(dim=1)
        first = int(bad.nonzero()[0])
        raise SpecRuntimeError(
            where,
            f"images hold NaN or inf in {int(bad.sum())} of {images.shape[0]} samples (first: sample {first}): "
            "clean or drop those images",
        )
    low, high = float(images.min()), float(images.max())
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


def _class_indices(labels: np.ndarray, where: Location) -> Tensor:
    """``(N,)`` long class indices from integer (or integral float) labels, else an error."""
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
                f"labels must be integer class indices, got {labels[index]:g} (sample {index}): store class indices 0, 1, ...",
            )
    if labels.size and labels.min() < 0:
        index = int(np.argmin(labels))
        raise SpecRuntimeError(
            where, f"label {labels[index]:g} (sample {index}) is negative: labels are class indices 0, 1, ..."
        )
    return torch.from_numpy(labels.astype(np.int64))
