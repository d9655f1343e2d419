"""Image files with ground truth as real data sets ship it, read lazily, sample by sample.

- ``folder``: images listed in a labels CSV, ground truth as mask images or a boxes CSV;
- ``imagefolder``: torchvision-style class folders, boxes as Pascal VOC XML (ImageNet LOC);
- ``coco``: a COCO instances JSON (polygons and RLE, via pycocotools).

Opening a source lists its samples (and parses the annotation files); :meth:`read` opens only
the image and mask files of the samples asked for. Every image is read as RGB float in [0, 1]
(grey replicated, alpha dropped, 16-bit divided by 65535), then ``data.transform`` moves it and
its masks together (:mod:`.transform`). A sample that cannot be read is a :class:`BadSample`:
one line naming the file and the sample, an error or, with ``data.on_bad_sample: skip``, a line
of :attr:`SampleBatch.skipped`.
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, did_you_mean, first_line
from ..spec.schema import CocoSpec, DataSpec, FolderSpec, ImageFolderSpec
from . import transform
from .annotations import NO_LABELS, AnnotationError, Box, coco_box, read_boxes_csv, read_coco_json, read_voc_xml
from .readers import as_strings, read_labels_csv
from .source import SCALES, SampleBatch, SampleSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""The files of an image folder (any case), and the suffixes a mask file may have."""
COCO_INSTALL = "COCO annotations need pycocotools: pip install 'pytest-saliency[coco]' (or pip install pycocotools)"


class BadSample(Exception):
    """One sample that cannot be used: the spec key naming its file, the file, what is wrong and the fix."""

    def __init__(self, location: Location, shown: str, problem: str, fix: str = "replace or remove the file") -> None:
        super().__init__(problem)
        self.location, self.shown, self.problem, self.fix = location, shown, problem, fix


Truth = Callable[[tuple[int, int]], np.ndarray]
"""A sample's ground truth (or extra mask) for an image of ``(H, W)``: ``(H, W) bool``, or a
:class:`BadSample`."""


@dataclass
class Sample:
    """One listed sample: its image file, label, ground truth and extra masks."""

    image: Path
    shown: str
    label: int
    truth: Truth
    extra: dict[str, Truth] = field(default_factory=dict)


class AnnotatedSource(SampleSource):
    """Listed :class:`Sample`\\ s, read on demand; ``fields`` are ``(N,)`` strings."""

    def __init__(
        self, spec: DataSpec, location: Location, samples: list[Sample], fields: dict[str, np.ndarray]
    ) -> None:
        self.spec = spec
        self.location = location
        self.images_location = location + ("root" if location[-1] == "imagefolder" else "images",)
        self.samples = samples[: spec.limit]
        self.fields = {name: values[: spec.limit] for name, values in fields.items()}
        self.extra_names = sorted(self.samples[0].extra) if self.samples else []
        self._size: tuple[str, tuple[int, int]] | None = None  # the first image read and its size after the transform
        if not self.samples:
            raise SpecRuntimeError(location, "the data set lists no images")

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, indices: Sequence[int]) -> SampleBatch:
        kept: list[int] = []
        images: list[Tensor] = []
        masks: list[dict[str, Tensor]] = []
        skipped: list[str] = []
        for index in indices:
            sample = self.samples[index]
            try:
                image, sample_masks = self._read_one(sample)
            except BadSample as bad:
                line = f"{bad.shown} (sample {index}): {bad.problem}"
                if self.spec.on_bad_sample == "skip":
                    skipped.append(line)
                    continue
                raise SpecRuntimeError(bad.location, f"{line} ({bad.fix}, or set data.on_bad_sample: skip)") from None
            self._check_size(sample, image)
            kept.append(index)
            images.append(image)
            masks.append(sample_masks)
        height, width = self._size[1] if self._size else (1, 1)
        chosen = torch.as_tensor(kept, dtype=torch.long)

        def stacked(name: str) -> Tensor:
            return (
                torch.stack([item[name] for item in masks])
                if masks
                else torch.zeros(0, height, width, dtype=torch.bool)
            )

        return SampleBatch(
            chosen,
            torch.stack(images) if images else torch.zeros(0, 3, height, width),
            stacked(""),
            torch.as_tensor([self.samples[index].label for index in kept], dtype=torch.long),
            {name: stacked(name) for name in self.extra_names},
            {name: values[chosen.numpy()] for name, values in self.fields.items()},
            skipped,
        )

    def stream(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        """:meth:`read` of each shard in turn (the next one is read in a background thread while
        the caller works on this one), never an empty batch: the skipped lines of a shard whose
        every sample is bad go with a neighbouring batch (in sample order)."""
        pending: SampleBatch | None = None
        carried: list[str] = []
        for batch in self._prefetched(shards):
            if not len(batch):
                (pending.skipped if pending is not None else carried).extend(batch.skipped)
                continue
            if pending is not None:
                yield pending
            batch.skipped[:0], carried = carried, []
            pending = batch
        if pending is not None:
            yield pending
        elif carried:
            raise SpecRuntimeError(
                self.location, f"every sample is bad ({len(carried)} skipped; the first: {carried[0]})"
            )

    def _prefetched(self, shards: Sequence[range]) -> Iterator[SampleBatch]:
        """:meth:`read` of each shard, the next one read meanwhile (image decoding and the
        transform overlap the model's work on the current shard)."""
        from concurrent.futures import ThreadPoolExecutor

        if len(shards) < 2:
            yield from (self.read(shard) for shard in shards)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saliency-read") as pool:
            future = pool.submit(self.read, shards[0])
            for shard in shards[1:]:
                batch = future.result()
                future = pool.submit(self.read, shard)
                yield batch
            yield future.result()

    def _read_one(self, sample: Sample) -> tuple[Tensor, dict[str, Tensor]]:
        image = self._image(sample)
        size = (int(image.shape[1]), int(image.shape[2]))
        masks = {"": torch.from_numpy(sample.truth(size))}
        masks.update({name: torch.from_numpy(truth(size)) for name, truth in sample.extra.items()})
        return transform.apply(self.spec.transform, image, masks)

    def _image(self, sample: Sample) -> Tensor:
        """``sample``'s image file, decoded: ``(3, H, W)`` float in [0, 1]."""
        return read_image(sample.image, sample.shown, self.images_location, self.spec.scale)

    def _check_size(self, sample: Sample, image: Tensor) -> None:
        """Every image must have one size after the transform (a batch is one tensor)."""
        size = (int(image.shape[1]), int(image.shape[2]))
        if self._size is None:
            self._size = (sample.shown, size)
            return
        first, expected = self._size
        if size == expected:
            return
        if self.spec.transform is None:
            raise SpecRuntimeError(
                self.images_location,
                f"{sample.shown} is {_shown_size(size)} but {first} is {_shown_size(expected)}: to give images "
                f"one size, add data.transform: {{resize: [{expected[0]}, {expected[1]}]}}",
            )
        raise SpecRuntimeError(
            ("data", "transform"),
            f"after the transform {sample.shown} is {_shown_size(size)} but {first} is {_shown_size(expected)}: "
            "resize: <int> keeps the aspect ratio, add center_crop (or give resize: [H, W])",
        )


def _shown_size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"  # width x height, as image viewers say


def read_image(path: Path, shown: str, location: Location, scale: float | None = None) -> Tensor:
    """The image file at ``path`` as ``(3, H, W)`` float in [0, 1]: RGB, grey replicated, alpha
    dropped; integers divided by ``scale`` (default 255, or 65535 for 16-bit)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image) if image.mode.startswith("I") else np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise BadSample(location, shown, "the file does not exist", "add it or remove its row") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:  # PIL's decoders raise all of these
        raise BadSample(location, shown, f"cannot read the image: {first_line(error)}") from error
    divisor = scale if scale is not None else SCALES.get(pixels.dtype, 65535.0 if pixels.dtype.kind in "iu" else 1.0)
    values = torch.from_numpy(pixels.astype(np.float32)) / divisor
    values = values.permute(2, 0, 1) if values.ndim == 3 else values.expand(3, *values.shape)
    if (scale is not None or pixels.dtype != np.uint8) and float(values.max()) > 1 + 1e-3:  # a small scale, 32 bits
        found = (
            f"data.scale: {scale:g} leaves" if scale is not None else f"{pixels.dtype} pixels divided by 65535 leave"
        )
        raise BadSample(
            ("data", "scale") if scale is not None else location, shown,
            f"{found} it in [0, {float(values.max()):.4g}]", "set data.scale to bring the images into [0, 1]",
        )  # fmt: skip
    return values.contiguous()


def mask_file(folder: Path, shown_dir: str, relative: str, location: Location, *, required: bool) -> Truth:
    """The mask of the image ``relative`` in ``folder`` (:func:`find_mask`, looked up when the
    sample is read): non-zero pixels are in, and it must have its image's size. No such file: a
    bad sample when ``required``, else an empty mask."""

    def read(size: tuple[int, int]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = find_mask(folder, relative)
        if path is None:
            if not required:
                return np.zeros(size, bool)
            shown = f"{shown_dir}/{Path(relative).with_suffix('').as_posix()}.*"
            raise BadSample(location, shown, "no mask file of this name", "add the mask or remove the image's row")
        shown = f"{shown_dir}/{path.relative_to(folder).as_posix()}"
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image) if image.mode.startswith("I") else np.asarray(image.convert("L"))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            raise BadSample(location, shown, f"cannot read the mask: {first_line(error)}") from error
        if pixels.shape != size:
            raise BadSample(
                location, shown, f"the mask is {_shown_size(pixels.shape)} but its image is {_shown_size(size)}",
                "give the mask its image's size",
            )  # fmt: skip
        return pixels > 0

    return read


def boxes_truth(boxes: Sequence[Box], shown: str, location: Location) -> Truth:
    """The union of ``boxes``, clipped to the image; a box wholly outside it is a bad sample.
    No boxes: an empty mask (the sample's scores are undefined)."""

    def read(size: tuple[int, int]) -> np.ndarray:
        height, width = size
        mask = np.zeros(size, bool)
        for top, left, bottom, right in boxes:
            if bottom <= 0 or right <= 0 or top >= height or left >= width:
                raise BadSample(
                    location, shown, f"box (top {top}, left {left}, bottom {bottom}, right {right}) lies outside "
                    f"the {_shown_size(size)} image", "correct the box",
                )  # fmt: skip
            mask[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)] = True
        return mask

    return read


def find_mask(folder: Path, relative: str) -> Path | None:
    """The mask image for the image ``relative`` (a path under its images folder): the same
    path under ``folder`` with any image suffix in any case (``0.png``, ``0.PNG``, ``0.Png``),
    else the same stem directly in ``folder``."""
    stem = Path(relative).with_suffix("")
    for candidate in (folder / stem, folder / stem.name):
        for suffix in (*IMAGE_SUFFIXES, *(suffix.upper() for suffix in IMAGE_SUFFIXES)):
            path = candidate.with_name(candidate.name + suffix)
            if path.is_file():
                return path
        if candidate.parent.is_dir():  # a mixed-case suffix: the folder is listed, for these misses only
            for path in sorted(candidate.parent.glob(f"{glob.escape(candidate.name)}.*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.stem == candidate.name and path.is_file():
                    return path
    return None


def extra_truths(
    extra: dict[str, str], spec_dir: Path, location: Location, relative_names: Sequence[str]
) -> list[dict[str, Truth]]:
    """Each sample's extra named masks: from a folder of masks named like the images (an image
    without one has an empty mask), or from a boxes CSV keyed by the images' names."""
    per_sample: list[dict[str, Truth]] = [{} for _ in relative_names]
    for name, given in extra.items():
        where = location + ("extra", name)
        path = spec_dir / given
        if given.lower().endswith(".csv"):
            boxes = _boxes_csv(path, given, where)
            for truths, relative in zip(per_sample, relative_names, strict=True):
                truths[name] = boxes_truth(boxes.get(relative, []), f"{given} ({relative})", where)
            continue
        if not path.is_dir():
            raise SpecRuntimeError(where, f"{given} is neither a folder of masks nor a boxes .csv")
        for truths, relative in zip(per_sample, relative_names, strict=True):
            truths[name] = mask_file(path, given, relative, where, required=False)
    return per_sample


def _boxes_csv(path: Path, shown: str, location: Location) -> dict[str, list[Box]]:
    try:
        return read_boxes_csv(path, shown)
    except AnnotationError as error:
        raise SpecRuntimeError(location, str(error)) from None


def label_index(label: str, classes: Sequence[str] | None, location: Location) -> int:
    """A label cell as a class index: an integer, or one of ``data.classes`` by name."""
    if label.lstrip("-").isdigit():
        return int(label)
    if classes and label in classes:
        return list(classes).index(label)
    hint = did_you_mean(label, classes or ())
    raise SpecRuntimeError(location, f"label {label!r} is neither an index nor one of data.classes{hint}")


# --- the three sources -----------------------------------------------------------------------


def folder_source(spec: DataSpec, spec_dir: Path) -> AnnotatedSource:
    """``data.folder``: the rows of the labels CSV, masks or boxes by file name."""
    folder: FolderSpec = spec.folder  # type: ignore[assignment]  # dispatched on it
    where: Location = ("data", "folder")
    if folder.labels is None:
        raise SpecRuntimeError(where, NO_LABELS)
    header, rows = read_labels_csv(spec_dir / folder.labels)
    names: list[str] = []
    labels: list[int] = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise SpecRuntimeError(where + ("labels",), f"{folder.labels} row {number} {row!r}: expected file,label")
        names.append(row[0].strip())
        labels.append(label_index(row[1].strip(), spec.classes, where + ("labels",)))
    if folder.masks is not None:
        mask_dir = spec_dir / folder.masks
        truths = [mask_file(mask_dir, folder.masks, name, where + ("masks",), required=True) for name in names]
    else:
        assert folder.boxes is not None
        boxes = _boxes_csv(spec_dir / folder.boxes, folder.boxes, where + ("boxes",))
        truths = [boxes_truth(boxes.get(name, []), f"{folder.boxes} ({name})", where + ("boxes",)) for name in names]
    extras = extra_truths(folder.extra, spec_dir, where, names)
    samples = [
        Sample(spec_dir / folder.images / name, f"{folder.images}/{name}", label, truth, extra)
        for name, label, truth, extra in zip(names, labels, truths, extras, strict=True)
    ]
    fields = {  # the columns after file,label, named by the header
        name: as_strings([row[column].strip() if column < len(row) else "" for row in rows])
        for column, name in enumerate(header)
        if column >= 2
    }
    return AnnotatedSource(spec, where, samples, fields)


def imagefolder_source(spec: DataSpec, spec_dir: Path) -> AnnotatedSource:
    """``data.imagefolder``: ``root/<class>/<image>``, classes sorted by name (or indexed by
    ``data.classes``), boxes from ``boxes/<stem>.xml`` (or ``boxes/<class>/<stem>.xml``)."""
    folder: ImageFolderSpec = spec.imagefolder  # type: ignore[assignment]  # dispatched on it
    where: Location = ("data", "imagefolder")
    root = spec_dir / folder.root
    if not root.is_dir():
        raise SpecRuntimeError(where + ("root",), f"{folder.root} is not a folder")
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir())
    if not class_dirs:
        raise SpecRuntimeError(where + ("root",), f"{folder.root} has no class folders (root/<class>/<image>)")
    names = [path.name for path in class_dirs]
    if spec.classes is not None:
        unknown = [name for name in names if name not in spec.classes]
        if unknown:
            raise SpecRuntimeError(
                ("data", "classes"),
                f"class folder {unknown[0]!r} of {folder.root} is not one of data.classes{did_you_mean(unknown[0], spec.classes)}",
            )
    box_dir = spec_dir / folder.boxes
    relative_names: list[str] = []
    samples: list[Sample] = []
    for class_dir in class_dirs:
        label = spec.classes.index(class_dir.name) if spec.classes is not None else names.index(class_dir.name)
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            relative = f"{class_dir.name}/{path.name}"
            relative_names.append(relative)
            samples.append(
                Sample(
                    path,
                    f"{folder.root}/{relative}",
                    label,
                    _voc_truth(box_dir, folder.boxes, class_dir.name, path.stem),
                )
            )
    for sample, extra in zip(samples, extra_truths(folder.extra, spec_dir, where, relative_names), strict=True):
        sample.extra = extra
    return AnnotatedSource(spec, where, samples, {})


def _voc_truth(box_dir: Path, shown_dir: str, class_name: str, stem: str) -> Truth:
    """The boxes of ``<stem>.xml`` (flat, as ImageNet LOC's validation set, or in a class
    folder, as its training set), parsed when the sample is read; no file: an empty mask."""
    where: Location = ("data", "imagefolder", "boxes")

    def read(size: tuple[int, int]) -> np.ndarray:
        for path in (box_dir / f"{stem}.xml", box_dir / class_name / f"{stem}.xml"):
            if path.is_file():
                shown = f"{shown_dir}/{path.relative_to(box_dir).as_posix()}"
                try:
                    boxes = read_voc_xml(path, shown, class_name)
                except AnnotationError as error:
                    raise BadSample(where, shown, str(error).removeprefix(f"{shown}: "), "correct the file") from None
                return boxes_truth(boxes, shown, where)(size)
        return np.zeros(size, bool)

    return read


def coco_source(spec: DataSpec, spec_dir: Path) -> AnnotatedSource:
    """``data.coco``: the images of an instances JSON that have an instance of a known class.
    The label is the category of the image's largest instance; the ground truth the union of
    its instances of that category (other categories' instances are no ground truth)."""
    coco: CocoSpec = spec.coco  # type: ignore[assignment]  # dispatched on it
    where: Location = ("data", "coco")
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise SpecRuntimeError(where, COCO_INSTALL) from None
    try:
        content = read_coco_json(spec_dir / coco.annotations, coco.annotations)
    except AnnotationError as error:
        raise SpecRuntimeError(where + ("annotations",), str(error)) from None
    categories = sorted(content["categories"], key=lambda category: category["id"])
    names = {category["id"]: category["name"] for category in categories}
    if spec.classes is not None:
        index = {
            category["id"]: spec.classes.index(category["name"])
            for category in categories
            if category["name"] in spec.classes
        }
    else:
        index = {category["id"]: position for position, category in enumerate(categories)}
    if not index:
        known = ", ".join(names.values())
        raise SpecRuntimeError(
            ("data", "classes"), f"no category of {coco.annotations} is one of data.classes (its categories: {known})"
        )
    instances: dict[Any, list[dict[str, Any]]] = {}
    for annotation in content["annotations"]:
        if annotation["category_id"] in index:
            instances.setdefault(annotation["image_id"], []).append(annotation)
    samples: list[Sample] = []
    for image in content["images"]:
        found = instances.get(image["id"])
        if not found:
            continue
        largest = max(found, key=_instance_area)
        category = largest["category_id"]
        chosen = [annotation for annotation in found if annotation["category_id"] == category]
        shown = f"{coco.images}/{image['file_name']}"
        truth = coco_truth(chosen, (int(image["height"]), int(image["width"])), shown, coco_mask)
        samples.append(Sample(spec_dir / coco.images / image["file_name"], shown, index[category], truth))
    if not samples:
        raise SpecRuntimeError(
            where + ("annotations",), f"no image of {coco.annotations} has an instance of data.classes"
        )
    relative_names = [sample.shown.removeprefix(f"{coco.images}/") for sample in samples]
    for sample, extra in zip(samples, extra_truths(coco.extra, spec_dir, where, relative_names), strict=True):
        sample.extra = extra
    return AnnotatedSource(spec, where, samples, {})


def _instance_area(annotation: dict[str, Any]) -> float:
    if "area" in annotation:
        return float(annotation["area"])
    _, _, width, height = annotation.get("bbox", (0, 0, 0, 0))
    return float(width) * float(height)


def coco_truth(annotations: list[dict[str, Any]], size: tuple[int, int], shown: str, coco_mask: Any) -> Truth:
    """The union of the instances' masks (polygons, RLE, or the bbox when there is no
    segmentation), rasterised at the size the JSON gives, which must be the image's."""
    where: Location = ("data", "coco", "annotations")

    def read(image_size: tuple[int, int]) -> np.ndarray:
        if image_size != size:
            raise BadSample(
                where, shown, f"the annotations say {_shown_size(size)} but the image is {_shown_size(image_size)}",
                "give the annotations of this image",
            )  # fmt: skip
        height, width = size
        mask = np.zeros(size, bool)
        for annotation in annotations:
            segmentation = annotation.get("segmentation")
            if not segmentation:
                mask |= boxes_truth([coco_box(annotation["bbox"])], shown, where)(size)
                continue
            if isinstance(segmentation, list):  # polygons
                rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = coco_mask.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation, nothing the user can fix
                warnings.simplefilter("ignore", DeprecationWarning)
                mask |= coco_mask.decode(rle).astype(bool)
        return mask

    return read
