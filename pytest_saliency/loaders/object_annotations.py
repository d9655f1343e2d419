"""The objects of detection data as data sets ship them, parsed with the standard library only (so
that ``pytest-saliency validate`` can read them without torch): a boxes CSV with one row per
object (``image,x1,y1,x2,y2,label``) and Pascal VOC XML files (one per image, several
``<object>``\\ s).

A detection box is ``x1, y1, x2, y2`` in continuous pixel coordinates of the stored image, as
torchvision's detectors give theirs: the top-left corner of the image is ``(0, 0)``, its
bottom-right ``(width, height)``, so the box ``[0, 0, 8, 8]`` covers the pixels 0..7 of the first
eight rows and columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import Location
from ..spec.schema import DataSpec
from .annotations import AnnotationError, csv_rows

DETECTION_HEADER = ("image", "x1", "y1", "x2", "y2", "label")
SUFFIXES_OF_MASKS = "suffixes pair a class-index mask with its image (task: segmentation): remove them"
BOX_SLACK = 1.0
"""Pixels a box may reach past the image's border (annotation tools' rounding); it is clipped."""


@dataclass(frozen=True)
class ObjectBox:
    """One annotated object: its class as written (a name or an index), its box ``x1, y1, x2,
    y2`` and where it is written (``boxes.csv row 3``, ``Annotations/1.xml object 2``)."""

    label: str
    box: tuple[float, float, float, float]
    written: str


@dataclass(frozen=True)
class VocImage:
    """One Pascal VOC annotation file: the image's file name and ``(height, width)`` as written
    (None where absent or 0) and its objects."""

    filename: str | None
    size: tuple[int, int] | None
    objects: list[ObjectBox]
    difficult: int
    """How many ``difficult`` objects were left out."""


def read_detection_csv(path: Path, shown: str) -> dict[str, list[ObjectBox]]:
    """The objects of an ``image,x1,y1,x2,y2,label`` CSV (:func:`.annotations.csv_rows`) by image
    name, in row order."""
    objects: dict[str, list[ObjectBox]] = {}
    for number, row, cells in csv_rows(path, shown):
        if len(cells) != len(DETECTION_HEADER):
            raise AnnotationError(f"{shown} row {number} {row!r}: expected {','.join(DETECTION_HEADER)}")
        try:
            box = _box(*(float(cell) for cell in cells[1:5]))
        except ValueError as error:
            raise AnnotationError(f"{shown} row {number}: {error}") from None
        written = f"{shown} row {number}"
        objects.setdefault(cells[0], []).append(ObjectBox(cells[5], box, written))
    return objects


def read_voc_objects(path: Path, shown: str) -> VocImage:
    """The objects of a Pascal VOC annotation file, ``difficult`` ones left out (as VOC's own
    evaluation ignores them). VOC's ``xmin ymin xmax ymax`` are 1-based and inclusive, so the box
    is ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise AnnotationError(f"cannot read {shown}: {error}") from error
    objects: list[ObjectBox] = []
    difficult = 0
    for number, element in enumerate(root.iter("object"), start=1):
        written = f"{shown} object {number}"
        name = (element.findtext("name") or "").strip()
        if not name:
            raise AnnotationError(f"{written} has no <name>: give its class")
        if (element.findtext("difficult") or "0").strip() == "1":
            difficult += 1
            continue
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{written} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(key, "")) for key in ("xmin", "ymin", "xmax", "ymax"))
            box = _box(xmin - 1, ymin - 1, xmax, ymax)
        except ValueError as error:
            problem = str(error) if "x1" in str(error) else "its <bndbox> needs numeric xmin, ymin, xmax, ymax"
            raise AnnotationError(f"{written}: {problem}") from None
        objects.append(ObjectBox(name, box, written))
    filename = (root.findtext("filename") or "").strip() or None
    try:
        width, height = (int(float(root.findtext(f"size/{key}") or 0)) for key in ("width", "height"))
    except ValueError:
        width = height = 0
    return VocImage(filename, (height, width) if height > 0 and width > 0 else None, objects, difficult)


def _box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    if not all(math.isfinite(value) for value in (x1, y1, x2, y2)):
        raise ValueError("x1, y1, x2, y2 must be finite numbers")
    if not (x1 < x2 and y1 < y2):
        raise ValueError(
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is empty: boxes are x1, y1, x2, y2 with x1 < x2, y1 < y2"
        )
    return (x1, y1, x2, y2)


def fitted_box(
    box: tuple[float, float, float, float], size: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """``box`` clipped to an image of ``size`` ``(H, W)`` when it reaches past its border by at
    most :data:`BOX_SLACK` pixels; None when it lies further outside."""
    height, width = size
    x1, y1, x2, y2 = box
    if min(x1, y1) < -BOX_SLACK or x2 > width + BOX_SLACK or y2 > height + BOX_SLACK:
        return None
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def object_data_problems(data: DataSpec, task: str, resolve: Callable[[str], Path]) -> Iterator[tuple[Location, str]]:
    """What can be said of ``task: detection | segmentation`` image data without reading an
    image: the keys the task needs, and a boxes CSV's rows. ``resolve`` turns a spec path into a
    file path."""
    if data.imagefolder is not None or data.factory is not None:
        key = "imagefolder" if data.imagefolder is not None else "factory"
        yield (
            ("data", key),
            f'task: {task} reads data.folder, data.coco or data.npz (docs/spec.md, "Tasks"): data.{key} gives '
            "one label per image, not its objects",
        )
    if data.coco is not None and task == "segmentation":
        yield (
            ("data", "coco"),
            "task: segmentation reads class-index masks: give data.folder: {images: ..., masks: ...}",
        )
    folder = data.folder
    if folder is None:
        return
    where: Location = ("data", "folder")
    if folder.labels is not None:
        source = "its boxes" if task == "detection" else "its mask"
        yield where + ("labels",), f"task: {task} takes each sample's class from {source}: remove folder.labels"
    if task == "detection" and folder.suffixes is not None:
        yield where + ("suffixes",), SUFFIXES_OF_MASKS
    if task == "detection" and folder.boxes is None:
        yield (
            where + ("masks",),
            "task: detection reads objects from folder.boxes (a CSV image,x1,y1,x2,y2,label or a folder of "
            "Pascal VOC XML files), not masks",
        )
    elif task == "segmentation" and folder.masks is None:
        yield where + ("boxes",), "task: segmentation reads class-index masks from folder.masks, not boxes"
    elif task == "detection" and folder.boxes is not None and resolve(folder.boxes).is_file():
        try:
            read_detection_csv(resolve(folder.boxes), folder.boxes)
        except AnnotationError as error:
            yield where + ("boxes",), str(error)
