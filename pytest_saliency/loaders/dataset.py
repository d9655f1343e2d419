"""``data.factory``: a torch ``Dataset``, read through a ``DataLoader`` (docs/spec.md § data).

A pass is one ``DataLoader`` whose batches are the shards (``batch_sampler``), so its
``data.num_workers`` worker processes live for the whole pass and read the next shards while the
model runs on this one; each worker turns its samples into a checked :class:`SampleBatch`.
What goes wrong in a worker (the Dataset raises, a sample has an odd shape or value) comes back
as a :class:`Problem` and is raised in the main process, at ``data.factory``.

A sample is one of

- ``(image, mask, label)``, or ``(image, mask, label, {name: mask or per-sample value})``;
- ``(image, target)`` as torchvision's detection and segmentation data sets give it: ``target`` a
  dict with ``label`` (or ``labels``, one class for the image) and ``masks`` (``(H, W)`` or ``(K, H, W)``
  instance masks, united) or ``boxes`` (``(K, 4)``, XYXY pixels unless a ``tv_tensors.BoundingBoxes``
  says otherwise, united into a mask); its other ``(H, W)`` entries are named masks, its scalars
  per-sample fields, and per-instance values (``area``, ``iscrowd``) are not used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import Location, SpecRuntimeError, describe_exception
from ..spec.schema import DataSpec
from .source import SampleBatch, SampleSource, checked_batch

WHERE: Location = ("data", "factory")

SAMPLE_FORMS = (
    "each sample must be (image, mask, label), (image, mask, label, {name: mask}) "
    "or (image, target) with target a dict holding label and masks or boxes"
)


@dataclass
class Problem:
    """An error found where the samples are read (maybe a DataLoader worker), raised again in
    the main process. ``cause`` is the user's exception when it was found in this process."""

    message: str
    cause: BaseException | None = field(default=None, compare=False)

    def __getstate__(self) -> dict[str, str | None]:
        return {"message": self.message, "cause": None}  # user exceptions may not pickle

    def raise_it(self) -> None:
        raise SpecRuntimeError(WHERE, self.message) from self.cause


@runtime_checkable
class Samples(Protocol):
    """What ``data.factory`` must return: a map-style ``Dataset`` (``len`` and ``dataset[index]``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> object: ...


class DatasetSource(SampleSource):
    """The samples of a ``Dataset`` (its first ``limit``); ``len(dataset)`` when it opens, the
    samples when a shard is read."""

    location: Location = WHERE

    def __init__(self, dataset: object, spec: DataSpec) -> None:
        if not isinstance(dataset, Samples):
            raise SpecRuntimeError(WHERE, "the data factory must return a Dataset with __len__ and __getitem__")
        count = len(dataset)
        self.dataset = dataset
        self.count = min(count, spec.limit) if spec.limit else count
        self.collate = Collate(spec.scale)
        self.num_workers = spec.num_workers
        self.pin_memory = spec.pin_memory and torch.cuda.is_available()
        self._first: tuple[int, dict[str, tuple[int, ...]]] | None = None
        """The first sample read and the shapes of its entries: every shard must have them."""

    def __len__(self) -> int:
        return self.count

    def read(self, indices: Sequence[int]) -> SampleBatch:
        """A few samples, read in this process."""
        samples = IndexedSamples(self.dataset)
        return self._checked(self.collate([samples[index] for index in indices]))

    def stream(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        loader: DataLoader[tuple[int, object] | Problem] = DataLoader(
            IndexedSamples(self.dataset),  # type: ignore[arg-type]  # a Dataset by duck typing
            batch_sampler=[list(shard) for shard in shards],
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=self.collate,
        )
        for batch in loader:
            yield self._checked(batch)

    def _checked(self, batch: SampleBatch | Problem) -> SampleBatch:
        """``batch``, raised if it is a problem; its shapes must be those of the first shard's."""
        if isinstance(batch, Problem):
            batch.raise_it()
        assert isinstance(batch, SampleBatch)
        if not len(batch):
            return batch
        shapes = _shapes(batch)
        if self._first is None:
            self._first = (int(batch.indices[0]), shapes)
        first, expected = self._first
        index = int(batch.indices[0])
        for key in [*expected, *(key for key in shapes if key not in expected)]:  # images first
            if key not in shapes or key not in expected:
                holder, other = (first, index) if key not in shapes else (index, first)
                raise SpecRuntimeError(
                    WHERE,
                    f"sample {holder} has {key!r} but sample {other} has not: every sample must hold the same entries",
                )
            if shapes[key] != expected[key]:
                raise SpecRuntimeError(
                    WHERE,
                    f"sample {index}'s {key} is {shapes[key]} but sample {first}'s is {expected[key]}: "
                    "every sample must have the same shape",
                )
        return batch


def _shapes(batch: SampleBatch) -> dict[str, tuple[int, ...]]:
    """The per-sample shape of each entry of ``batch`` (fields: ``()``)."""
    tensors = {"images": batch.images, "masks": batch.masks, **batch.regions}
    return {**{key: tuple(value.shape[1:]) for key, value in tensors.items()}, **{key: () for key in batch.fields}}


class IndexedSamples:
    """``dataset[index]`` as ``(index, sample)``, or a :class:`Problem` when the Dataset raises."""

    def __init__(self, dataset: Samples) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> tuple[int, object] | Problem:
        try:
            return index, self.dataset[index]
        except Exception as error:  # noqa: BLE001  (user code can raise anything)
            return Problem(f"reading sample {index} of the Dataset failed: {describe_exception(error)}", error)


class Collate:
    """A DataLoader's ``collate_fn``: a shard's ``(index, sample)`` pairs as a checked
    :class:`SampleBatch` (or the :class:`Problem` that stops it), in a worker or in-process."""

    def __init__(self, scale: float | None) -> None:
        self.scale = scale

    def __call__(self, items: Sequence[tuple[int, object] | Problem]) -> SampleBatch | Problem:
        problem = next((item for item in items if isinstance(item, Problem)), None)
        if problem is not None:
            return problem
        try:
            return self._collate(items)  # type: ignore[arg-type]  # no Problem left
        except SpecRuntimeError as error:
            return Problem(error.message)

    def _collate(self, items: Sequence[tuple[int, object]]) -> SampleBatch:
        if not items:
            nothing = np.zeros((0, 1, 1), np.float32)
            return checked_batch([], nothing, nothing, np.zeros(0, np.int64), {}, {}, self.scale, WHERE)
        indices = [index for index, _ in items]
        columns: dict[str, list[np.ndarray]] = {}
        for index, sample in items:
            entries = sample_entries(sample, index)
            if columns and entries.keys() != columns.keys():
                key = sorted(entries.keys() ^ columns.keys())[0]
                holder, other = (index, indices[0]) if key in entries else (indices[0], index)
                raise SpecRuntimeError(
                    WHERE,
                    f"sample {holder} has {key!r} but sample {other} has not: every sample must hold the same entries",
                )
            for key, value in entries.items():
                columns.setdefault(key, []).append(value)
        for key, values in columns.items():
            odd = next((i for i, value in enumerate(values) if value.shape != values[0].shape), None)
            if odd is not None:
                raise SpecRuntimeError(
                    WHERE,
                    f"sample {indices[odd]}'s {key} is {values[odd].shape} but sample {indices[0]}'s is "
                    f"{values[0].shape}: every sample must have the same shape",
                )
        stacked = {key: np.stack(values) for key, values in columns.items()}
        images, masks, labels = stacked.pop("images"), stacked.pop("masks"), stacked.pop("labels")
        fields = {key: value for key, value in stacked.items() if value.ndim == 1}
        regions = {key: value for key, value in stacked.items() if key not in fields}
        return checked_batch(indices, images, masks, labels, regions, fields, self.scale, WHERE)


def sample_entries(sample: object, index: int) -> dict[str, np.ndarray]:
    """One Dataset sample as arrays: ``images`` ``(C, H, W)`` or ``(H, W)``, ``masks`` ``(H, W)``,
    ``labels`` ``()``, then its named masks ``(H, W)`` and per-sample values ``()``."""
    if isinstance(sample, tuple | list) and len(sample) == 2 and isinstance(sample[1], Mapping):
        return _from_target(_as_array(sample[0]), sample[1], index)
    if not isinstance(sample, tuple | list) or len(sample) not in (3, 4):
        raise SpecRuntimeError(WHERE, SAMPLE_FORMS)
    extra = sample[3] if len(sample) == 4 else {}
    if not isinstance(extra, Mapping):
        raise SpecRuntimeError(WHERE, SAMPLE_FORMS)
    entries = {"images": _as_array(sample[0]), "masks": _as_array(sample[1]), "labels": _as_array(sample[2])}
    return {**entries, **{str(name): _as_array(value) for name, value in extra.items()}}


def _from_target(image: np.ndarray, target: Mapping[str, object], index: int) -> dict[str, np.ndarray]:
    """The entries of a torchvision-style ``(image, target)`` sample."""
    height, width = image.shape[-2:]
    label = target.get("label", target.get("labels"))
    if label is None:
        raise SpecRuntimeError(WHERE, f"sample {index}'s target has no 'label' or 'labels': give the image's class")
    classes = np.unique(np.asarray(label).reshape(-1))
    if classes.size != 1:
        raise SpecRuntimeError(
            WHERE,
            f"sample {index}'s target labels hold {classes.size} classes {classes.tolist()}: "
            "one class per image (give target['label'])",
        )
    if "masks" in target:
        masks = _as_array(target["masks"])
        mask = (masks != 0).any(axis=0) if masks.ndim == 3 else masks
    elif "boxes" in target:
        mask = boxes_mask(target["boxes"], height, width)
    else:
        raise SpecRuntimeError(
            WHERE, f"sample {index}'s target has no 'masks' or 'boxes': give the ground truth as one of them"
        )
    entries = {"images": image, "masks": mask, "labels": classes[0]}
    for name, value in target.items():
        if name in ("label", "labels", "masks", "boxes"):
            continue
        array = _as_array(value)
        if array.ndim == 0 or array.shape == (height, width):
            entries[str(name)] = array  # a per-sample value, or a named mask
    return entries


def boxes_mask(boxes: object, height: int, width: int) -> np.ndarray:
    """``(H, W) bool``: the pixels whose centre lies in one of the ``(K, 4)`` boxes, given in XYXY
    pixels (or in the format a ``tv_tensors.BoundingBoxes`` names: XYWH, CXCYWH)."""
    form = getattr(getattr(boxes, "format", None), "name", "XYXY")
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if form == "XYWH":
        corners = np.concatenate([corners[:, :2], corners[:, :2] + corners[:, 2:]], axis=1)
    elif form == "CXCYWH":
        corners = np.concatenate([corners[:, :2] - corners[:, 2:] / 2, corners[:, :2] + corners[:, 2:] / 2], axis=1)
    elif form != "XYXY":
        raise SpecRuntimeError(WHERE, f"boxes in format {form} are not supported: give XYXY, XYWH or CXCYWH boxes")
    columns, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
    in_columns = (columns >= corners[:, 0:1]) & (columns < corners[:, 2:3])  # (K, W)
    in_rows = (rows >= corners[:, 1:2]) & (rows < corners[:, 3:4])  # (K, H)
    covered: np.ndarray = (in_rows.T.astype(np.int64) @ in_columns.astype(np.int64)) > 0
    return covered


def _as_array(value: object) -> np.ndarray:
    """A tensor, array, number or PIL image as an array (a PIL image channels first)."""
    if hasattr(value, "getbands"):  # a PIL image: (H, W, C) -> (C, H, W)
        array = np.asarray(value)
        return array.transpose(2, 0, 1) if array.ndim == 3 else array
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
