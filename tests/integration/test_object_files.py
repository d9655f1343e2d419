"""``task: detection | segmentation`` from image files: a boxes CSV, Pascal VOC XML, COCO instances
and class-index mask folders, written here from the arrays of ``test_tasks`` so that what is read
can be compared with what was written (and with the ``.npz`` of the same data), through
``data.transform`` and end to end through pytest.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_saliency.engine import SpecEngine
from pytest_saliency.loaders.objects import box_masks
from pytest_saliency.spec import load_spec
from tests.integration.test_tasks import TASK_MODELS, task_arrays

CLASSES = ["zero", "one"]


def written_arrays() -> dict[str, np.ndarray]:
    """``test_tasks``' arrays with the images as the uint8 a PNG holds."""
    arrays = task_arrays()
    arrays["images"] = np.round(arrays["images"] * 255).astype(np.uint8)
    return arrays


def write_files(root: Path) -> dict[str, np.ndarray]:
    """The images (and decoy masks) as PNGs, their objects as a CSV, VOC XML and a COCO JSON, and
    their class masks as palette PNGs (class 1 where channel 0 is bright, 255 on the border)."""
    arrays = written_arrays()
    for folder in ("images", "decoy", "voc", "classes"):
        (root / folder).mkdir()
    for number, image in enumerate(arrays["images"]):
        Image.fromarray(image.transpose(1, 2, 0)).save(root / "images" / f"img{number}.png")
        Image.fromarray(arrays["decoy"][number].astype(np.uint8) * 255).save(root / "decoy" / f"img{number}.png")
        classes = arrays["masks"][number].astype(np.uint8)
        classes[0, :] = 255  # unlabelled, as VOC's borders
        palette = Image.fromarray(classes, mode="P")
        palette.putpalette([0, 0, 0, 128, 0, 0] + [224, 224, 192] * 254)
        palette.save(root / "classes" / f"img{number}.png")
    rows = ["image,x1,y1,x2,y2,label"]
    objects: dict[int, list[str]] = {0: [], 1: [], 2: []}
    coco: dict[str, list[dict[str, object]]] = {
        "images": [{"id": 10 + n, "file_name": f"img{n}.png", "height": 16, "width": 16} for n in range(3)],
        "categories": [{"id": 1, "name": "zero"}, {"id": 2, "name": "one"}],
        "annotations": [],
    }
    for box, label, image in zip(arrays["boxes"], arrays["box_labels"], arrays["box_images"], strict=True):
        x1, y1, x2, y2 = (int(value) for value in box)
        rows.append(f"img{image}.png,{x1},{y1},{x2},{y2},{CLASSES[label]}")
        objects[int(image)].append(
            f"<object><name>{CLASSES[label]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
        coco["annotations"].append(
            {"id": len(coco["annotations"]), "image_id": 10 + int(image), "category_id": int(label) + 1,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}
        )  # fmt: skip
    objects[1].append(  # left out, as VOC's evaluation leaves difficult objects out
        "<object><name>one</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax>"
        "<ymax>4</ymax></bndbox></object>"
    )
    annotations = coco["annotations"]
    annotations[0]["segmentation"] = instance_rle()  # object 0's instance mask, smaller than its box
    annotations.append(  # a crowd region: no object
        {"id": 99, "image_id": 10, "category_id": 1, "bbox": [0, 0, 16, 16], "iscrowd": 1}
    )
    for image, items in objects.items():
        (root / "voc" / f"img{image}.xml").write_text(
            f"<annotation><filename>img{image}.png</filename><size><width>16</width><height>16</height></size>"
            + "".join(items)
            + "</annotation>",
            encoding="utf-8",
        )
    (root / "boxes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "coco.json").write_text(json.dumps(coco), encoding="utf-8")
    np.savez(root / "tasks.npz", **arrays)
    return arrays


def instance_mask() -> np.ndarray:
    """Object 0's COCO instance mask: an L inside its box ``[0, 0, 8, 8]``."""
    mask = np.zeros((16, 16), dtype=bool)
    mask[1:7, 1:3] = True
    mask[5:7, 1:6] = True
    return mask


def instance_rle() -> dict[str, object]:
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(instance_mask().astype(np.uint8)))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def data_block(kind: str, extra: str = "") -> str:
    sources = {
        "csv": "folder: {images: ../images, boxes: ../boxes.csv, extra: {decoy: ../decoy}}",
        "voc": "folder: {images: ../images, boxes: ../voc, extra: {decoy: ../decoy}}",
        "coco": "coco: {images: ../images, annotations: ../coco.json, extra: {decoy: ../decoy}}",
        "masks": "folder: {images: ../images, masks: ../classes, extra: {decoy: ../decoy}}",
        "npz": "npz: ../tasks.npz",
    }
    return f"data:\n  {sources[kind]}\n  classes: [zero, one]\n  batch_size: 2\n  shard_size: 2\n{extra}"


def spec_text(task: str, kind: str, extra: str = "", checks: str = "") -> str:
    model = "factory: taskmodels:BoxDetector" if task == "detection" else "factory: taskmodels:Segmenter\n  output: out"
    settings = "segmentation: {background: 0}\n" if task == "segmentation" else ""
    return (
        f"version: 1\ntask: {task}\n{settings}model:\n  {model}\n{data_block(kind, extra)}"
        "attributions:\n  grad: {method: Saliency}\n"
        + "checks:\n"
        + (checks or '  - id: coverage\n    shared_interest: {gtc: {mean: ">= 0.0"}}\n')
    )


@pytest.fixture
def files(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(taskmodels=TASK_MODELS)
    write_files(project.path)
    return project


def read_all(project: pytest.Pytester, text: str) -> SimpleNamespace:
    path = project.path / "specs" / "t.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    engine = SpecEngine(load_spec(path), torch.device("cpu"), (project.path,))
    batch = engine.source.read(range(len(engine.source)))
    return SimpleNamespace(batch=batch, count=len(engine.source))


@pytest.mark.parametrize("kind", ["csv", "voc", "coco"])
def test_detection_objects_read_from_files_equal_the_npz_of_the_same_data(files: pytest.Pytester, kind: str) -> None:
    read = read_all(files, spec_text("detection", kind)).batch
    expected = read_all(files, spec_text("detection", "npz")).batch
    assert read.boxes.tolist() == expected.boxes.tolist() == written_arrays()["boxes"].tolist()
    assert read.labels.tolist() == expected.labels.tolist() == [0, 1, 1, 0, 1]
    assert read.images_of.tolist() == [0, 0, 0, 1, 1]  # the difficult object and the crowd region are no objects
    assert torch.equal(read.images, expected.images)
    if kind == "coco":  # object 0's ground truth is its instance mask, the others' their boxes
        assert torch.equal(read.masks[0], torch.from_numpy(instance_mask()))
        assert torch.equal(read.masks[1:], expected.masks[1:])
    else:
        assert torch.equal(read.masks, expected.masks)
    assert torch.equal(read.regions["decoy"], expected.regions["decoy"])


def test_segmentation_classes_are_read_from_palette_masks_as_indices(files: pytest.Pytester) -> None:
    read = read_all(files, spec_text("segmentation", "masks")).batch
    arrays = written_arrays()
    assert read.labels.tolist() == [1, 1, 1]  # background 0 and ignore_index 255 are no samples
    truth = torch.from_numpy(arrays["masks"] == 1)
    truth[:, 0, :] = False  # the border row is 255
    assert torch.equal(read.masks, truth)
    assert torch.equal(read.images, torch.from_numpy(arrays["images"]).float() / 255)


def test_cityscapes_masks_are_paired_with_their_images_by_the_ends_of_their_stems(files: pytest.Pytester) -> None:
    arrays = written_arrays()
    for folder in ("leftImg8bit/val/aachen", "gtFine/val/aachen"):
        (files.path / folder).mkdir(parents=True)
    for number in range(2):
        stem = f"aachen_00000{number}_000019"
        image = Image.fromarray(arrays["images"][number].transpose(1, 2, 0))
        image.save(files.path / "leftImg8bit/val/aachen" / f"{stem}_leftImg8bit.png")
        ids = Image.fromarray(arrays["masks"][number].astype(np.uint8) * 7)  # label id 7: road
        ids.save(files.path / "gtFine/val/aachen" / f"{stem}_gtFine_labelIds.png")
        image.save(files.path / "gtFine/val/aachen" / f"{stem}_gtFine_color.png")  # colours: no mask
    text = spec_text("segmentation", "masks").replace(
        "folder: {images: ../images, masks: ../classes, extra: {decoy: ../decoy}}",
        "folder:\n    images: ../leftImg8bit/val\n    masks: ../gtFine/val\n"
        "    suffixes: {images: _leftImg8bit, masks: _gtFine_labelIds}",
    )
    read = read_all(files, text).batch
    assert read.labels.tolist() == [7, 7]
    assert torch.equal(read.masks, torch.from_numpy(arrays["masks"][:2] == 1))
    assert torch.equal(read.images, torch.from_numpy(arrays["images"][:2]).float() / 255)


def test_transform_moves_boxes_and_masks_with_the_image(files: pytest.Pytester) -> None:
    (files.path / "boxes.csv").write_text(
        "img0.png,0,0,8,8,zero\nimg0.png,8,8,16,16,one\nimg0.png,0,0,4,1,one\n", encoding="utf-8"
    )
    transform = "  transform: {resize: [32, 32], center_crop: [24, 32]}\n"
    read = read_all(files, spec_text("detection", "csv", transform)).batch
    # resize doubles every coordinate; the crop keeps rows 4..27 (top = round((32 - 24) / 2)): y - 4,
    # clipped to [0, 24]; the third box ([0, 0, 8, 2] after the resize) is cropped away: no sample
    assert read.boxes.tolist() == [[0.0, 0.0, 16.0, 12.0], [16.0, 12.0, 32.0, 24.0]]
    assert read.labels.tolist() == [0, 1]
    stored = torch.from_numpy(box_masks(np.array([[0, 0, 8, 8], [8, 8, 16, 16]]), 16, 16))
    moved = stored.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, 4:28]  # nearest, then the crop
    assert torch.equal(read.masks, moved)
    assert tuple(read.images.shape) == (2, 3, 24, 32)


@pytest.mark.parametrize(
    ("task", "kind"), [("detection", "csv"), ("detection", "voc"), ("detection", "coco"), ("segmentation", "masks")]
)
def test_a_spec_runs_end_to_end_from_files(
    files: pytest.Pytester, helpers: SimpleNamespace, task: str, kind: str
) -> None:
    checks = (
        '  - id: coverage\n    shared_interest: {gtc: {mean: ">= 0.0"}}\n'
        '  - id: fidelity\n    fidelity: {steps: 4, unit: "patch:4", gap: ">= -1"}\n'
        '  - id: decoy\n    region: {mask: decoy, method: occlusion, share: {mean: "<= 1"}}\n'
    )
    text = spec_text(task, kind, checks=checks)
    if task == "detection":  # 2 of the 5 objects are missed: above the gate, every item fails and says so
        text = text.replace("task: detection\n", "task: detection\ndetection: {max_missed: 0.3}\n")
    (files.path / "specs" / "t.saliency.yaml").write_text(text, encoding="utf-8")
    result = files.runpytest_inprocess("specs/t.saliency.yaml", "-p", "no:randomly")
    output = result.stdout.str()
    assert {row["check"] for row in helpers.summary_rows(output)} == {"coverage", "fidelity", "decoy"}
    assert "error" not in {row.get("status") for row in helpers.summary_rows(output)}, output
    if task == "detection":
        assert "2 of 5 objects missed by the model" in output
        result.assert_outcomes(failed=3)
    else:
        result.assert_outcomes(passed=3)


CSV_OUTSIDE = "img0.png,0,0,8,8,zero\nimg0.png,10,0,30,8,zero\n"
CSV_MISSING = "img0.png,0,0,8,8,zero\nimg7.png,0,0,8,8,zero\n"
CSV_UNKNOWN = "img0.png,0,0,8,8,zreo\n"
VOC_SIZE = (
    "<annotation><size><width>20</width><height>16</height></size><object><name>zero</name><bndbox>"
    "<xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object></annotation>"
)
SPEC_CHANGES = {
    "  classes: [zero, one]\n": "",
    "boxes: ../boxes.csv": "labels: ../boxes.csv, boxes: ../boxes.csv",
    "folder: {images: ../images, boxes: ../boxes.csv, extra: {decoy: ../decoy}}": "imagefolder: {root: ../images, boxes: ../voc}",
}


@pytest.mark.parametrize(
    ("task", "kind", "change", "message"),
    [
        ("detection", "csv", ("boxes.csv", CSV_OUTSIDE),
         "data.folder.boxes: ../boxes.csv row 2: box [10, 0, 30, 8] lies outside the 16x16 image ../images/img0.png: "
         "boxes are x1, y1, x2, y2 in pixels of the stored image: correct the box"),
        ("detection", "csv", ("boxes.csv", CSV_MISSING),
         "data.folder.images: ../images/img7.png: the file does not exist (add it or remove its objects)"),
        ("detection", "csv", ("boxes.csv", CSV_UNKNOWN),
         "data.classes: ../boxes.csv row 1: class 'zreo' is not one of data.classes (did you mean 'zero'?): "
         "add it to data.classes or correct the file"),
        ("detection", "csv", ("boxes.csv", "img0.png,8,0,0,8,zero\n"),
         "data.folder.boxes: ../boxes.csv row 1: box [8, 0, 0, 8] is empty: boxes are x1, y1, x2, y2 with x1 < x2, y1 < y2"),
        ("detection", "voc", ("voc/img0.xml", "<annotation><object><name>zero</name></object></annotation>"),
         "data.folder.boxes: ../voc/img0.xml object 1 has no <bndbox>"),
        ("segmentation", "masks", ("classes/img1.png", None),
         "data.folder.masks: ../classes/img1.png (sample 1): the mask is 8x8 but its image is 16x16 (give the mask its "
         "image's size, or set data.on_bad_sample: skip)"),
        ("segmentation", "coco", None,
         "data.coco: task: segmentation reads class-index masks: give data.folder: {images: ..., masks: ...}"),
        ("detection", "csv", ("boxes.csv", "img0.png,0,0,8,8\n"),
         "data.folder.boxes: ../boxes.csv row 1 ['img0.png', '0', '0', '8', '8']: expected image,x1,y1,x2,y2,label"),
        ("detection", "voc", ("voc/img0.xml", VOC_SIZE),
         "data.folder.boxes: ../images/img0.png (sample 0): the annotation says 20x16 but the image is 16x16 "
         "(correct the annotation's <size>, or set data.on_bad_sample: skip)"),
        ("detection", "voc", ("spec", "  classes: [zero, one]\n"),
         "data.folder.boxes: ../voc/img0.xml object 1: class 'zero' is a name: list the class names in data.classes"),
        ("segmentation", "masks", ("classes/img0.png", "RGB"),
         "data.folder.masks: ../classes/img0.png: the mask is in colour (mode RGB) (store class indices: a palette "
         "(P) or grey (L) PNG, as VOC's SegmentationClass or Cityscapes' *_labelIds.png)"),
        ("detection", "csv", ("spec", "boxes: ../boxes.csv"),
         "data.folder.labels: task: detection takes each sample's class from its boxes: remove folder.labels"),
        ("detection", "masks", None,
         "data.folder.masks: task: detection reads objects from folder.boxes (a CSV image,x1,y1,x2,y2,label or a "
         "folder of Pascal VOC XML files), not masks"),
        ("segmentation", "csv", None,
         "data.folder.boxes: task: segmentation reads class-index masks from folder.masks, not boxes"),
        ("detection", "csv", ("spec", "folder: {images: ../images, boxes: ../boxes.csv, extra: {decoy: ../decoy}}"),
         'data.imagefolder: task: detection reads data.folder, data.coco or data.npz (docs/spec.md, "Tasks"): '
         "data.imagefolder gives one label per image, not its objects"),
    ],
    ids=["outside", "missing-image", "unknown-class", "empty-box", "voc-no-box", "mask-size", "coco-segmentation",
         "csv-columns", "voc-size", "class-name-without-classes", "colour-mask", "labels-with-a-task",
         "detection-from-masks", "segmentation-from-boxes", "imagefolder-with-a-task"],
)  # fmt: skip
def test_bad_object_data_is_one_line_at_its_key(
    files: pytest.Pytester,
    helpers: SimpleNamespace,
    task: str,
    kind: str,
    change: tuple[str, str | None] | None,
    message: str,
) -> None:
    text = spec_text(task, kind)
    if change is not None:
        name, content = change
        if name == "spec":  # a change of the spec: the line it replaces
            text = text.replace(content, SPEC_CHANGES[content])
        elif content is None:  # a class mask of another size
            Image.fromarray(np.ones((8, 8), np.uint8), mode="P").save(files.path / name)
        elif content == "RGB":
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(files.path / name)
        else:
            (files.path / name).write_text(content, encoding="utf-8")
    (files.path / "specs" / "t.saliency.yaml").write_text(text, encoding="utf-8")
    result = files.runpytest_inprocess("specs/t.saliency.yaml", "-p", "no:randomly")
    output = result.stdout.str()
    assert f": {message}" in output.replace("\n", " ") or f": {message}" in output, output
    helpers.assert_no_traceback(output)


def test_a_reports_detection_sample_carries_its_box_and_the_matched_detection(files: pytest.Pytester) -> None:
    path = files.path / "specs" / "t.saliency.yaml"
    path.write_text(spec_text("detection", "voc"), encoding="utf-8")
    engine = SpecEngine(load_spec(path), torch.device("cpu"), (files.path,))
    batch, _, _ = engine.report_samples([0, 2], "grad")
    assert batch.drawn_boxes is not None
    first, missed = batch.drawn_boxes
    assert first.truth.tolist() == [0.0, 0.0, 8.0, 8.0]
    # all three of the detector's boxes are seen on image 0; object 0's match is box 1 (IoU 0.78, the
    # higher score); object 2 (class 1 at [0, 8, 8, 16]) has none
    assert first.detections.tolist() == [[0.0, 0.0, 8.0, 8.0], [1.0, 0.0, 9.0, 8.0], [8.0, 8.0, 16.0, 16.0]]
    assert (first.matched, missed.matched) == (1, None)


def test_the_html_reports_thumbnails_draw_the_boxes(files: pytest.Pytester) -> None:
    import base64
    import io

    from pytest_saliency.report.boxes import MATCHED_COLOUR, TRUTH_COLOUR

    (files.path / "specs" / "t.saliency.yaml").write_text(spec_text("detection", "voc"), encoding="utf-8")
    result = files.runpytest_inprocess(
        "specs/t.saliency.yaml", "-p", "no:randomly", "--saliency-json", "out/r.json", "--saliency-report", "out/r.html"
    )
    result.assert_outcomes(passed=1)
    (item,) = json.loads((files.path / "out" / "r.json").read_text(encoding="utf-8"))["results"]
    assert "thumbnail_error" not in item
    shown = {row["index"]: row["thumbnail"] for row in item["worst"]}
    with Image.open(io.BytesIO(base64.b64decode(shown[0]))) as picture:  # object 0: a match
        image = np.asarray(picture.convert("RGB"))[:, :96].reshape(-1, 3) / 255  # the first panel

    def has(colour: tuple[float, float, float]) -> bool:
        return bool((np.abs(image - np.asarray(colour)).max(axis=1) < 0.02).any())

    assert has(TRUTH_COLOUR) and has(MATCHED_COLOUR)
    assert "data:image/png;base64," in (files.path / "out" / "r.html").read_text(encoding="utf-8")
