"""Image files with ground truth as data sets ship it, end to end: folder (masks or a boxes
CSV), imagefolder (Pascal VOC XML) and coco, with images of mixed sizes and modes, a transform,
images without annotation, and bad samples as one line or skipped (docs/spec.md, "data")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

WriteSpec = Callable[..., Path]

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.8"}
"""


def picture(image: np.ndarray, index: int) -> Image.Image:
    """Sample ``index`` of the project's arrays as a PNG-able image of a mixed size and mode:
    every third one at twice the size; modes RGB, RGBA, L (grey: the object in every channel)
    and 16-bit grey in turn. Channel 0 (what the tiny model looks at) is the object in each."""
    rgb = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    mode = ["RGB", "RGBA", "L", "I;16"][index % 4]
    if mode == "RGBA":
        result = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    elif mode == "L":
        result = Image.fromarray(rgb[..., 0])
    elif mode == "I;16":
        result = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        result = Image.fromarray(rgb)
    return result.resize((32, 32), Image.Resampling.NEAREST) if index % 3 == 0 else result


def object_box(index: int) -> tuple[int, int, int, int]:
    """Sample ``index``'s object (conftest.make_arrays) as (top, left, bottom, right) at 16x16."""
    return 2 + index, 1 + 2 * index, 6 + index, 5 + 2 * index


def scaled(box: tuple[int, int, int, int], index: int) -> tuple[int, int, int, int]:
    factor = 2 if index % 3 == 0 else 1
    return tuple(value * factor for value in box)  # type: ignore[return-value]


def write_folder(directory: Path, helpers: SimpleNamespace, *, masks: bool = True) -> None:
    """``images/``, ``labels.csv`` and ``masks/`` (native size) or ``boxes.csv`` (sample 5
    without a row: no annotation; sample 4's box crossing the right border)."""
    arrays = helpers.make_arrays()
    (directory / "images").mkdir()
    (directory / "masks").mkdir()
    labels, boxes = ["file,label"], ["file,top,left,bottom,right"]
    for index, (image, mask, label) in enumerate(zip(arrays["images"], arrays["masks"], arrays["labels"], strict=True)):
        name = f"s{index}.png"
        shown = picture(image, index)
        shown.save(directory / "images" / name)
        labels.append(f"{name},{label}")
        if masks:
            outline = Image.fromarray(mask.astype(np.uint8) * 255).resize(shown.size, Image.Resampling.NEAREST)
            outline.save(directory / "masks" / name)
        elif index == 4:
            top, left, bottom, _ = object_box(index)
            boxes.append(f"{name},{top},{left},{bottom},{left + 40}")  # crosses the border: clipped
        elif index != 5:
            boxes.append(f"{name},{','.join(map(str, scaled(object_box(index), index)))}")
    (directory / "labels.csv").write_text("\n".join(labels) + "\n")
    (directory / "boxes.csv").write_text("\n".join(boxes) + "\n")


TRANSFORM = "transform: {resize: [16, 16]}"
CLASSES = "classes: [circle, square, triangle]"


def results(directory: Path) -> list[dict[str, Any]]:
    """The items of the run's ``--saliency-json out.json``."""
    return list(json.loads((directory / "out.json").read_text())["results"])


def test_folder_of_masks_with_mixed_sizes_and_modes(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_folder(project.path, helpers)
    data = f"folder: {{images: ../images, masks: ../masks, labels: ../labels.csv}}\n{CLASSES}\n{TRANSFORM}"
    write_spec(data=data, checks=CHECKS)
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    (item,) = results(project.path)
    assert item["samples"] == 6 and item["undefined"] == 0
    assert min(item["per_sample"]["iou"]) > 0.8
    write_spec(data=f"{data}\nshard_size: 4\nbatch_size: 3", checks=CHECKS)  # shards of 4 and 2
    project.runpytest_inprocess("--saliency-json", "out.json").assert_outcomes(passed=1)
    assert results(project.path)[0]["per_sample"] == item["per_sample"]


def test_folder_of_boxes_clipped_and_unannotated(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    """The box crossing the border is clipped (its sample still scores); the image without a
    row has an empty ground truth: its GTC (the share of the ground truth covered) is undefined
    and counted, its IoU 0."""
    write_folder(project.path, helpers, masks=False)
    data = f"folder: {{images: ../images, boxes: ../boxes.csv, labels: ../labels.csv}}\n{CLASSES}\n{TRANSFORM}"
    write_spec(
        data=data, checks=CHECKS.replace('iou: {mean: ">= 0.8"}', 'iou: {mean: ">= 0.95"}\n    gtc: {mean: ">= 0.9"}')
    )
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(failed=1)
    (item,) = results(project.path)
    assert item["samples"] == 6 and item["undefined"] == 1
    iou, gtc = item["per_sample"]["iou"], item["per_sample"]["gtc"]
    assert gtc[5] is None and iou[5] == 0 and all(value > 0.8 for value in iou[:4])
    assert iou[4] == pytest.approx(16 / 28, abs=1e-6)  # the box clipped to 4x7 pixels holds the 4x4 object
    result.stdout.fnmatch_lines(["*(of 6; 1 undefined)*"])


def test_imagefolder_with_voc_boxes(project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace) -> None:
    arrays = helpers.make_arrays()
    (project.path / "boxes").mkdir()
    for index, (image, label) in enumerate(zip(arrays["images"], arrays["labels"], strict=True)):
        folder = project.path / "val" / helpers.CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        picture(image, index).save(folder / f"s{index}.png")
        top, left, bottom, right = scaled(object_box(index), index)
        (project.path / "boxes" / f"s{index}.xml").write_text(
            f"<annotation><object><name>{helpers.CLASSES[label]}</name><bndbox><xmin>{left + 1}</xmin>"
            f"<ymin>{top + 1}</ymin><xmax>{right}</xmax><ymax>{bottom}</ymax></bndbox></object></annotation>"
        )
    write_spec(data=f"imagefolder: {{root: ../val, boxes: ../boxes}}\n{CLASSES}\n{TRANSFORM}", checks=CHECKS)
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    (item,) = results(project.path)
    assert item["samples"] == 6 and item["undefined"] == 0
    assert sorted(item["per_sample"]["index"]) == list(range(6))


def test_coco_polygons(project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace) -> None:
    pytest.importorskip("pycocotools")
    arrays = helpers.make_arrays()
    (project.path / "images").mkdir()
    images, annotations = [], []
    for index, (image, label) in enumerate(zip(arrays["images"], arrays["labels"], strict=True)):
        shown = picture(image, index)
        shown.save(project.path / "images" / f"s{index}.png")
        images.append({"id": index + 1, "file_name": f"s{index}.png", "width": shown.width, "height": shown.height})
        top, left, bottom, right = scaled(object_box(index), index)
        polygon = [left, top, right, top, right, bottom, left, bottom]
        area = (bottom - top) * (right - left)
        annotations.append(
            {
                "id": index + 1,
                "image_id": index + 1,
                "category_id": int(label) + 1,
                "segmentation": [polygon],
                "area": area,
            }
        )
    images.append({"id": 99, "file_name": "unannotated.png", "width": 16, "height": 16})  # no instance: no sample
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(helpers.CLASSES)]
    content = {"images": images, "annotations": annotations, "categories": categories}
    (project.path / "instances.json").write_text(json.dumps(content))
    write_spec(
        data=f"coco: {{images: ../images, annotations: ../instances.json}}\n{CLASSES}\n{TRANSFORM}", checks=CHECKS
    )
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    (item,) = results(project.path)
    assert item["samples"] == 6 and item["undefined"] == 0


def spoil(directory: Path, case: str) -> None:
    """Spoil sample 2 of a boxes folder (or a masks folder, for ``mask-size``)."""
    if case == "unreadable":
        (directory / "images" / "s2.png").write_bytes(b"not a png")
    elif case == "missing":
        (directory / "images" / "s2.png").unlink()
    elif case == "box-outside":
        with open(directory / "boxes.csv", "a") as stream:
            stream.write("s2.png,40,40,50,50\n")
    elif case == "mask-size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(directory / "masks" / "s2.png")


BAD = {
    "unreadable": ("boxes", "data.folder.images: ../images/s2.png (sample 2): cannot read the image: cannot identify "
                   "image file * (replace or remove the file, or set data.on_bad_sample: skip)"),
    # found when the spec is collected; with on_bad_sample: skip, when the sample is read
    "missing": ("boxes", "data.folder.labels: 1 of the listed images do not exist (first: ../images/s2.png): "
                "add them, remove their rows, or set data.on_bad_sample: skip"),
    "box-outside": ("boxes", "data.folder.boxes: ../boxes.csv (s2.png) (sample 2): box (top 40, left 40, bottom 50, "
                    "right 50) lies outside the 16x16 image (correct the box, or set data.on_bad_sample: skip)"),
    "mask-size": ("masks", "data.folder.masks: ../masks/s2.png (sample 2): the mask is 5x5 but its image is 16x16 "
                  "(give the mask its image's size, or set data.on_bad_sample: skip)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_sample_is_one_line_naming_the_file(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace, case: str
) -> None:
    truth, message = BAD[case]
    write_folder(project.path, helpers, masks=truth == "masks")
    spoil(project.path, case)
    data = (
        f"folder: {{images: ../images, {truth}: ../{truth}{'.csv' if truth == 'boxes' else ''}, labels: ../labels.csv}}"
    )
    checks = CHECKS.replace(">= 0.8", ">= 0.5")  # sample 4's clipped box scores lower, sample 5 is undefined
    write_spec(data=f"{data}\n{CLASSES}\n{TRANSFORM}", checks=checks)
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"specs/x.saliency.yaml:*: {message}"])
    helpers.assert_no_traceback(result.stdout.str())

    # shard_size 1: the bad sample's shard is empty
    write_spec(data=f"{data}\n{CLASSES}\n{TRANSFORM}\non_bad_sample: skip\nshard_size: 1", checks=checks)
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    (item,) = results(project.path)
    assert item["samples"] == 5 and 2 not in item["per_sample"]["index"]
    skipped = message.split(": ", 1)[1].rsplit(" (", 1)[0]  # the line without its key and fix
    if case == "missing":
        skipped = "../images/s2.png (sample 2): the file does not exist"
    assert len(item["skipped"]) == 1
    pytest.LineMatcher(item["skipped"]).fnmatch_lines([skipped])
    pytest.LineMatcher(item["details"]).fnmatch_lines([f"1 bad sample skipped (on_bad_sample): {skipped}"])
