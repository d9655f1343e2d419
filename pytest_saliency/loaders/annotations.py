"""Ground-truth files as data sets ship them, parsed with the standard library only (so that
``pytest-saliency validate`` can read them without torch): boxes CSVs, Pascal VOC XML (ImageNet
LOC's format) and the structure of a COCO instances JSON.

A box is ``(top, left, bottom, right)`` in pixels of the stored image, 0-based, end exclusive:
it covers ``rows top..bottom-1`` and ``columns left..right-1`` (docs/spec.md).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)``: 0-based pixels, end exclusive."""

BOXES_HEADER = ("file", "top", "left", "bottom", "right")
NO_LABELS = "task: classification reads each image's class from folder.labels: give a CSV file,label"


class AnnotationError(ValueError):
    """A ground-truth file that cannot be used, with a one-line message naming the file and row."""


def csv_rows(path: Path, shown: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """The rows of an annotation CSV as ``(line number, row, its cells stripped)``: UTF-8 with or
    without the byte-order mark Excel writes, ``#`` comments and empty lines skipped, a first row
    whose first cell is file, filename, image or name taken as a header and skipped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"cannot read {shown}: {error}") from error
    for number, row in enumerate(rows, start=1):
        if not row or row[0].startswith("#"):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and cells[0].lower() in ("file", "filename", "image", "name"):
            continue
        yield number, row, cells


def read_boxes_csv(path: Path, shown: str) -> dict[str, list[Box]]:
    """The boxes of a ``file,top,left,bottom,right`` CSV (:func:`csv_rows`) by file name; several
    rows for one file are all its boxes."""
    boxes: dict[str, list[Box]] = {}
    for number, row, cells in csv_rows(path, shown):
        if len(cells) != 5:
            raise AnnotationError(f"{shown} row {number} {row!r}: expected {','.join(BOXES_HEADER)}")
        try:
            top, left, bottom, right = (int(cell) for cell in cells[1:])
        except ValueError:
            raise AnnotationError(
                f"{shown} row {number} {row!r}: top, left, bottom and right must be whole pixels"
            ) from None
        if bottom <= top or right <= left:
            raise AnnotationError(
                f"{shown} row {number}: box ({top}, {left}, {bottom}, {right}) is empty: "
                "bottom and right are end-exclusive and must exceed top and left"
            )
        boxes.setdefault(cells[0], []).append((top, left, bottom, right))
    return boxes


def read_voc_xml(path: Path, shown: str, name: str | None = None) -> list[Box]:
    """The boxes of a Pascal VOC annotation file: those of the objects called ``name`` when it
    names any, else all of them. VOC's ``xmin ymin xmax ymax`` are 1-based and inclusive, so the
    box is ``(ymin - 1, xmin - 1, ymax, xmax)`` (fractional values are rounded)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise AnnotationError(f"cannot read {shown}: {error}") from error
    found: list[tuple[str, Box]] = []
    for number, element in enumerate(root.iter("object"), start=1):
        box = element.find("bndbox")
        if box is None:
            raise AnnotationError(f"{shown}: object {number} has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (round(float(box.findtext(key, ""))) for key in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise AnnotationError(f"{shown}: object {number}'s <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
        if xmax < xmin or ymax < ymin:
            raise AnnotationError(f"{shown}: object {number}'s box has xmax < xmin or ymax < ymin")
        found.append(((element.findtext("name") or "").strip(), (ymin - 1, xmin - 1, ymax, xmax)))
    named = [box for label, box in found if label == name]
    return named if named else [box for _, box in found]


def coco_box(bbox: Sequence[float]) -> Box:
    """A COCO ``[x, y, width, height]`` (continuous, 0-based) as the pixels it touches."""
    x, y, width, height = (float(value) for value in bbox)
    return (math.floor(y), math.floor(x), math.ceil(y + height), math.ceil(x + width))


def read_coco_json(path: Path, shown: str) -> dict[str, Any]:
    """A COCO instances JSON, its structure checked: ``images`` (id, file_name, height, width),
    ``annotations`` (image_id, category_id, segmentation or bbox) and ``categories`` (id, name)."""
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationError(f"cannot read {shown}: {error}") from error
    if not isinstance(content, dict):
        raise AnnotationError(
            f"{shown} is no COCO instances file: expected an object with images, annotations, categories"
        )
    required = {
        "images": ("id", "file_name", "height", "width"),
        "annotations": ("image_id", "category_id"),
        "categories": ("id", "name"),
    }
    for key, fields in required.items():
        entries = content.get(key)
        if not isinstance(entries, list):
            raise AnnotationError(f"{shown} has no {key!r} list: it is not a COCO instances file")
        for position, entry in enumerate(entries):
            missing = [field for field in fields if not isinstance(entry, dict) or field not in entry]
            if missing:
                raise AnnotationError(f"{shown}: {key}[{position}] lacks {', '.join(missing)}")
            if key == "annotations" and "segmentation" not in entry and "bbox" not in entry:
                raise AnnotationError(f"{shown}: annotations[{position}] has neither segmentation nor bbox")
    categories = {category["id"] for category in content["categories"]}
    images = {image["id"] for image in content["images"]}
    for position, annotation in enumerate(content["annotations"]):
        if annotation["category_id"] not in categories:
            raise AnnotationError(
                f"{shown}: annotations[{position}] has category_id {annotation['category_id']!r}, no category's id"
            )
        if annotation["image_id"] not in images:
            raise AnnotationError(
                f"{shown}: annotations[{position}] has image_id {annotation['image_id']!r}, no image's id"
            )
    return content
