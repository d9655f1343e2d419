"""Detection and segmentation data from image files (``task: detection | segmentation``; docs/spec.md,
"Tasks"): one sample per ground-truth object, or per (image, class present in its mask).

- ``folder: {images, boxes}`` (detection): a boxes CSV ``image,x1,y1,x2,y2,label`` or a folder of
  Pascal VOC XML files (:mod:`.object_annotations`);
- ``coco: {images, annotations}`` (detection): every instance that is not a crowd region, with
  its polygon or RLE mask as its ground truth (via pycocotools, as :mod:`.annotated`);
- ``folder: {images, masks}`` (segmentation): class-index masks named like the images (palette
  PNGs read as their indices, as VOC and Cityscapes ship them).

Opening lists the samples: it parses the annotations (and, for segmentation, reads each mask once
to list its classes), and moves every box through ``data.transform`` (:func:`.transform.apply_boxes`),
so a box cropped to less than a pixel is no sample. Images are decoded only when their shard is
read, each once for all its objects; their masks move with them (nearest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, did_you_mean, first_line
from ..spec.schema import DataSpec, FolderSpec, SegmentationSpec, SuffixesSpec
from . import transform
from .annotated import (
    COCO_INSTALL,
    IMAGE_SUFFIXES,
    AnnotatedSource,
    BadSample,
    Sample,
    Truth,
    coco_truth,
    extra_truths,
    find_mask,
)
from .annotations import AnnotationError, read_coco_json
from .object_annotations import ObjectBox, fitted_box, object_data_problems, read_detection_csv, read_voc_objects
from .objects import bounding_boxes, box_masks
from .source import SampleBatch

MIN_SIDE = 1.0
"""A box narrower or lower than this (pixels, after the transform) is no sample, as torchvision's
``SanitizeBoundingBoxes`` drops it."""


@dataclass
class ListedImage:
    """An image of the data and its objects before the transform: the file, its name under the
    images folder, its stored ``(H, W)``, and per object its class index, box, and ground truth."""

    path: Path
    name: str
    size: tuple[int, int]
    labels: list[int]
    boxes: list[tuple[float, float, float, float]]
    truths: list[Truth]


class ObjectFilesSource(AnnotatedSource):
    """The object (or class-region) samples of image files, ordered by image; ``boxes`` ``(M, 4)``
    after the transform and ``image_of`` ``(M,)`` as the ``.npz`` object source gives them."""

    def __init__(self, spec: DataSpec, spec_dir: Path, location: Location, images: list[ListedImage]) -> None:
        samples: list[Sample] = []
        boxes: list[Tensor] = []
        image_of: list[int] = []
        block = spec.coco if spec.coco is not None else spec.folder
        assert block is not None
        extras = extra_truths(block.extra, spec_dir, location, [image.name for image in images])
        for number, (image, extra) in enumerate(zip(images, extras, strict=True)):
            if not image.boxes:
                continue
            moved = transform.apply_boxes(spec.transform, torch.tensor(image.boxes, dtype=torch.float32), image.size)
            kept = ((moved[:, 2] - moved[:, 0]) >= MIN_SIDE) & ((moved[:, 3] - moved[:, 1]) >= MIN_SIDE)
            shown = f"{block.images}/{image.name}"
            for row in kept.nonzero().view(-1).tolist():
                samples.append(Sample(image.path, shown, image.labels[row], image.truths[row], extra))
                boxes.append(moved[row])
                image_of.append(number)
        self.boxes = torch.stack(boxes) if boxes else torch.zeros(0, 4)
        self.image_of = torch.tensor(image_of, dtype=torch.long)
        self._decoded: tuple[Path, Tensor] | None = None  # the last image read (its objects follow it)
        super().__init__(spec, location, samples, {})

    def read(self, indices: Sequence[int]) -> SampleBatch:
        batch = super().read(indices)
        batch.boxes = self.boxes[batch.indices]
        batch.images_of = self.image_of[batch.indices]
        return batch

    def _image(self, sample: Sample) -> Tensor:
        decoded = self._decoded  # one read of the attribute: another thread may replace it
        if decoded is None or decoded[0] != sample.image:
            decoded = (sample.image, super()._image(sample))
            self._decoded = decoded
        return decoded[1]


def object_source(spec: DataSpec, spec_dir: Path, task: str, segmentation: SegmentationSpec) -> ObjectFilesSource:
    """The source a ``data:`` block of image files names for ``task`` (detection or segmentation)."""
    for location, message in object_data_problems(spec, task, lambda relative: spec_dir / relative):
        raise SpecRuntimeError(location, message)
    if spec.coco is not None:
        return ObjectFilesSource(spec, spec_dir, ("data", "coco"), _coco_images(spec, spec_dir))
    folder = spec.folder
    assert folder is not None  # an npz is read by .objects; imagefolder and factory are refused above
    where: Location = ("data", "folder")
    if task == "detection":
        assert folder.boxes is not None
        return ObjectFilesSource(spec, spec_dir, where, _box_images(spec, spec_dir, folder.images, folder.boxes))
    assert folder.masks is not None
    images = _mask_images(spec, spec_dir, folder, segmentation)
    return ObjectFilesSource(spec, spec_dir, where, images)


def _box_images(spec: DataSpec, spec_dir: Path, images: str, boxes: str) -> list[ListedImage]:
    """The images of a boxes CSV (every image it names) or of a folder of VOC XML files (every
    ``*.xml``, sorted; its image is ``<filename>``, else the file of its stem)."""
    where: Location = ("data", "folder", "boxes")
    path = spec_dir / boxes
    listed: list[tuple[str, Path | None, tuple[int, int] | None, list[ObjectBox]]] = []
    try:
        if path.is_dir():
            for xml in sorted(path.rglob("*.xml")):
                relative = xml.relative_to(path).as_posix()
                voc = read_voc_objects(xml, f"{boxes}/{relative}")
                name = voc.filename or Path(relative).with_suffix("").as_posix()
                found_image = _image_file(spec_dir / images, name)
                if found_image is not None:  # the name with its suffix
                    name = found_image.relative_to(spec_dir / images).as_posix()
                listed.append((name, found_image, voc.size, voc.objects))
        else:
            for name, objects in read_detection_csv(path, boxes).items():
                listed.append((name, spec_dir / images / name, None, objects))
    except AnnotationError as error:
        raise SpecRuntimeError(where, str(error)) from None
    found: list[ListedImage] = []
    for name, image_path, written_size, objects in listed:
        shown = f"{images}/{name}"
        size = written_size or _stored_size(image_path, shown)
        labels = [_class_index(item, spec.classes, where) for item in objects]
        fitted = [_fitted(item, size, shown, where) for item in objects]
        truths = [_box_truth(box, size, shown, written_size is not None) for box in fitted]
        found.append(ListedImage(image_path or spec_dir / images / name, name, size, labels, fitted, truths))
    return found


def _coco_images(spec: DataSpec, spec_dir: Path) -> list[ListedImage]:
    """Every image of a COCO instances JSON with an instance of a known category; each instance
    that is not a crowd region (``iscrowd: 1``, which COCO's evaluation ignores) is an object."""
    coco = spec.coco
    assert coco is not None
    where: Location = ("data", "coco", "annotations")
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise SpecRuntimeError(("data", "coco"), COCO_INSTALL) from None
    try:
        content = read_coco_json(spec_dir / coco.annotations, coco.annotations)
    except AnnotationError as error:
        raise SpecRuntimeError(where, str(error)) from None
    categories = sorted(content["categories"], key=lambda category: category["id"])
    names = {category["id"]: str(category["name"]) for category in categories}
    position = {category["id"]: str(number) for number, category in enumerate(categories)}
    by_image: dict[object, list[tuple[int, dict[str, object]]]] = {}
    for number, annotation in enumerate(content["annotations"]):
        if not annotation.get("iscrowd"):
            by_image.setdefault(annotation["image_id"], []).append((number, annotation))
    found: list[ListedImage] = []
    for image in content["images"]:
        instances = by_image.get(image["id"], [])
        size = (int(image["height"]), int(image["width"]))
        shown = f"{coco.images}/{image['file_name']}"
        labels, boxes, truths = [], [], []
        for number, annotation in instances:
            category = annotation["category_id"]
            written = f"{coco.annotations} annotations[{number}]"
            label = names[category] if spec.classes is not None else position[category]
            if spec.classes is not None and label not in spec.classes:
                continue  # data.classes leaves this category out
            bbox = annotation.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise SpecRuntimeError(
                    where, f"{written} has no bbox [x, y, width, height]: give each instance its box"
                )
            x, y, width, height = (float(value) for value in bbox)
            item = ObjectBox(label, (x, y, x + width, y + height), written)
            labels.append(_class_index(item, spec.classes, where))
            boxes.append(_fitted(item, size, shown, where))
            truths.append(coco_truth([annotation], size, shown, coco_mask))
        if boxes:
            found.append(
                ListedImage(
                    spec_dir / coco.images / image["file_name"], image["file_name"], size, labels, boxes, truths
                )
            )
    return found


def _fitted(item: ObjectBox, size: tuple[int, int], shown: str, where: Location) -> tuple[float, float, float, float]:
    fitted = fitted_box(item.box, size)
    if fitted is None:
        box = ", ".join(f"{value:g}" for value in item.box)
        raise SpecRuntimeError(
            where,
            f"{item.written}: box [{box}] lies outside the {size[1]}x{size[0]} image {shown}: boxes are "
            "x1, y1, x2, y2 in pixels of the stored image: correct the box",
        )
    return fitted


def _class_index(item: ObjectBox, classes: Sequence[str] | None, where: Location) -> int:
    """An object's class as an index: an integer, or one of ``data.classes`` by name."""
    if item.label.isdigit():
        return int(item.label)
    if classes is not None and item.label in classes:
        return list(classes).index(item.label)
    if classes is None:
        raise SpecRuntimeError(
            where, f"{item.written}: class {item.label!r} is a name: list the class names in data.classes"
        )
    raise SpecRuntimeError(
        ("data", "classes"),
        f"{item.written}: class {item.label!r} is not one of data.classes{did_you_mean(item.label, classes)}: "
        "add it to data.classes or correct the file",
    )


def _box_truth(box: tuple[float, float, float, float], size: tuple[int, int], shown: str, checked: bool) -> Truth:
    """The pixels whose centre lies in ``box``; ``checked``: the annotation gave the image's size,
    which the stored image must have."""
    where: Location = ("data", "folder", "boxes")

    def read(image_size: tuple[int, int]) -> np.ndarray:
        if checked and image_size != size:
            raise BadSample(
                where, shown, f"the annotation says {size[1]}x{size[0]} but the image is "
                f"{image_size[1]}x{image_size[0]}", "correct the annotation's <size>",
            )  # fmt: skip
        mask: np.ndarray = box_masks(np.asarray([box], dtype=np.float32), *image_size)[0]
        return mask

    return read


def _image_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it exists, else the image of that stem with any image suffix."""
    path = folder / name
    return path if path.is_file() else find_mask(folder, name)


def _stored_size(path: Path | None, shown: str) -> tuple[int, int]:
    """The ``(H, W)`` of an image file from its header (nothing decoded); a missing or unreadable
    file is an error when the data opens, whatever ``on_bad_sample`` says (its objects cannot be
    placed without its size)."""
    from PIL import Image, UnidentifiedImageError

    location: Location = ("data", "folder", "images")
    try:
        if path is None:
            raise FileNotFoundError(shown)
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except FileNotFoundError:
        problem, fix = "the file does not exist", "add it or remove its objects"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        problem, fix = f"cannot read the image: {first_line(error)}", "replace or remove the file"
    raise SpecRuntimeError(location, f"{shown}: {problem} ({fix})")


# --- segmentation: class-index mask folders --------------------------------------------------------


def _mask_images(spec: DataSpec, spec_dir: Path, block: FolderSpec, settings: SegmentationSpec) -> list[ListedImage]:
    """One listed image per mask file (sorted; its image: the same path under ``images`` with
    any image suffix, the stem's end changed as ``suffixes`` say), with one sample per class its
    mask holds after the transform, less ``ignore_index`` and ``background``."""
    assert block.masks is not None
    images, masks = block.images, block.masks
    folder = spec_dir / masks
    where: Location = ("data", "folder", "masks")
    if not folder.is_dir():
        raise SpecRuntimeError(where, f"{masks} is not a folder of masks")
    skipped = {value for value in (settings.ignore_index, settings.background) if value is not None}
    suffixes = block.suffixes or SuffixesSpec()
    found: list[ListedImage] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        if not path.stem.endswith(suffixes.masks):
            continue  # another file of the data set (Cityscapes' *_color.png, *_instanceIds.png)
        shown = f"{masks}/{path.relative_to(folder).as_posix()}"
        stem = path.stem.removesuffix(suffixes.masks)
        relative = path.with_name(stem + suffixes.images + path.suffix).relative_to(folder).as_posix()
        try:
            pixels = read_class_mask(path, shown, where)
        except BadSample as bad:
            raise SpecRuntimeError(where, f"{shown}: {bad.problem} ({bad.fix})") from None
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        classes = [value for value in np.unique(pixels).tolist() if value not in skipped]
        if spec.transform is not None and classes:
            moved = transform.apply(
                spec.transform,
                torch.zeros(1, *size),
                {str(value): torch.from_numpy(pixels == value) for value in classes},
            )[1]
            classes = [value for value in classes if bool(moved[str(value)].any())]
        image = _image_file(spec_dir / images, relative) or spec_dir / images / relative
        name = image.relative_to(spec_dir / images).as_posix()
        truths = [_class_truth(path, shown, value) for value in classes]
        regions = bounding_boxes(np.stack([pixels == value for value in classes])) if classes else np.zeros((0, 4))
        boxes = [(float(x1), float(y1), float(x2), float(y2)) for x1, y1, x2, y2 in regions.tolist()]
        found.append(ListedImage(image, name, size, classes, boxes, truths))
    if not found:
        named = f" whose stem ends with {suffixes.masks}" if suffixes.masks else ""
        raise SpecRuntimeError(where, f"{masks} holds no mask images{named} ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_class_mask(path: Path, shown: str, location: Location) -> np.ndarray:
    """A class-index mask file as ``(H, W)`` integers: a palette PNG's indices (not its colours),
    a grey or 16-bit image's values; a colour image is a bad sample."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
                raise BadSample(
                    location, shown, f"the mask is in colour (mode {image.mode})",
                    "store class indices: a palette (P) or grey (L) PNG, as VOC's SegmentationClass or "
                    "Cityscapes' *_labelIds.png",
                )  # fmt: skip
            pixels = np.asarray(image)
    except FileNotFoundError:
        raise BadSample(location, shown, "the mask file does not exist", "add it") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise BadSample(location, shown, f"cannot read the mask: {first_line(error)}") from error
    if pixels.ndim != 2:
        raise BadSample(location, shown, f"the mask has shape {pixels.shape}", "store one channel of class indices")
    return pixels.astype(np.int64)


def _class_truth(path: Path, shown: str, label: int) -> Truth:
    """The pixels of class ``label`` in the mask file at ``path``, which must have its image's size."""
    where: Location = ("data", "folder", "masks")

    def read(size: tuple[int, int]) -> np.ndarray:
        pixels = read_class_mask(path, shown, where)
        if pixels.shape != size:
            raise BadSample(
                where, shown, f"the mask is {pixels.shape[1]}x{pixels.shape[0]} but its image is {size[1]}x{size[0]}",
                "give the mask its image's size",
            )  # fmt: skip
        mask: np.ndarray = pixels == label
        return mask

    return read
