"""Labelled images with ground-truth masks, from an ``.npz``, a folder or a Dataset factory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..spec.errors import SpecRuntimeError
from ..spec.schema import DataSpec
from ..spec.validate import as_strings, read_labels_csv
from .imports import call_factory, resolve_callable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class SaliencyData:
    """Images ``(N, C, H, W)`` float in [0, 1], masks ``(N, H, W) bool``, labels ``(N,)`` long,
    extra named region masks ``(N, H, W) bool`` (e.g. a decoy patch), all on the CPU, and named
    per-sample fields ``(N,)`` as strings (a hospital, a camera: what ``slices`` select by)."""

    images: Tensor
    masks: Tensor
    labels: Tensor
    regions: dict[str, Tensor] = field(default_factory=dict)
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_data(spec: DataSpec, spec_dir: Path, search_paths: Sequence[Path]) -> SaliencyData:
    """Load the data set a ``data:`` block names (its first ``limit`` samples)."""
    if spec.npz is not None:
        arrays = _from_npz(spec_dir / spec.npz)
        where: tuple[str | int, ...] = ("data", "npz")
    elif spec.folder is not None:
        arrays = _from_folder(spec_dir, spec.folder.images, spec.folder.masks, spec.folder.labels, spec.classes)
        where = ("data", "folder")
    else:
        assert spec.factory is not None
        where = ("data", "factory")
        factory = resolve_callable(spec.factory, search_paths, where)
        arrays = _from_dataset(call_factory(factory, dict(spec.kwargs), spec.factory, where), spec.limit, where)
    return _to_tensors(arrays, spec.limit, where)


def _from_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _from_folder(
    spec_dir: Path, images: str, masks: str, labels: str, classes: Sequence[str] | None
) -> dict[str, np.ndarray]:
    from PIL import Image

    image_dir, mask_dir = spec_dir / images, spec_dir / masks
    header, rows = read_labels_csv(spec_dir / labels)
    image_list, mask_list, label_list = [], [], []
    for row in rows:
        name, label = row[0].strip(), row[1].strip()
        candidates = [mask_dir / (Path(name).stem + suffix) for suffix in IMAGE_SUFFIXES]
        mask_path = next((candidate for candidate in candidates if candidate.exists()), None)
        if mask_path is None:
            raise SpecRuntimeError(("data", "folder", "masks"), f"no mask for {name} in {masks}")
        image_list.append(np.asarray(Image.open(image_dir / name).convert("RGB")).transpose(2, 0, 1))
        mask_list.append(np.asarray(Image.open(mask_path).convert("L")) > 0)
        label_list.append(_label_index(label, classes))
    fields = {  # the columns after file,label, named by the header
        name: as_strings([row[column].strip() if column < len(row) else "" for row in rows])
        for column, name in enumerate(header)
        if column >= 2
    }
    return {"images": np.stack(image_list), "masks": np.stack(mask_list), "labels": np.asarray(label_list), **fields}


def _label_index(label: str, classes: Sequence[str] | None) -> int:
    if label.lstrip("-").isdigit():
        return int(label)
    if classes and label in classes:
        return list(classes).index(label)
    raise SpecRuntimeError(("data", "folder", "labels"), f"label {label!r} is neither an index nor one of data.classes")


def _from_dataset(dataset: object, limit: int | None, where: tuple[str | int, ...]) -> dict[str, np.ndarray]:
    try:
        count = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise SpecRuntimeError(where, "the data factory must return a Dataset with __len__ and __getitem__") from None
    count = min(count, limit) if limit else count
    columns: dict[str, list[np.ndarray]] = {"images": [], "masks": [], "labels": []}
    for index in range(count):
        sample = dataset[index]  # type: ignore[index]
        if not isinstance(sample, tuple | list) or len(sample) not in (3, 4):
            raise SpecRuntimeError(where, "each sample must be (image, mask, label) or (image, mask, label, {name: mask})")
        columns["images"].append(np.asarray(sample[0]))
        columns["masks"].append(np.asarray(sample[1]))
        columns["labels"].append(np.asarray(sample[2]))
        for name, value in (sample[3] if len(sample) == 4 else {}).items():  # masks, or per-sample fields
            columns.setdefault(name, []).append(np.asarray(value))
    return {key: np.stack(values) for key, values in columns.items()}


def _to_tensors(arrays: dict[str, np.ndarray], limit: int | None, where: tuple[str | int, ...]) -> SaliencyData:
    images = arrays["images"][:limit]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise SpecRuntimeError(where, f"images must be (N, C, H, W), got {images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    image_tensor = torch.from_numpy(np.ascontiguousarray(images)).float() / scale
    count, height, width = image_tensor.shape[0], image_tensor.shape[2], image_tensor.shape[3]
    masks = arrays["masks"][:limit]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != (count, height, width):
        raise SpecRuntimeError(where, f"masks {masks.shape} do not match images {tuple(image_tensor.shape)}: expected {(count, height, width)}")
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
            raise SpecRuntimeError(where, f"region mask {key!r} is {tuple(region.shape)}, expected {(count, height, width)}")
    return SaliencyData(
        images=image_tensor,
        masks=torch.from_numpy(np.ascontiguousarray(masks)).bool(),
        labels=torch.from_numpy(labels.astype(np.int64)),
        regions=regions,
        fields=fields,
    )
