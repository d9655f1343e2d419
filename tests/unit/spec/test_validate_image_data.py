"""``pytest-saliency validate`` on image-file data: what it checks without opening an image
(CSV columns, listed files, the COCO JSON's structure, class folders, extra masks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_saliency.cli import main

SPEC = """\
version: 1
model:
  factory: mypkg.model:build
data:
{data}
attributions:
  grad: {{method: Saliency}}
checks:
  - id: coverage
    shared_interest:
      gtc: {{mean: ">= 0.5"}}
"""


def validate(directory: Path, data: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    path = directory / "x.saliency.yaml"
    path.write_text(SPEC.format(data=data))
    main(["validate", str(path)])
    return [line.removeprefix(f"{path}:") for line in capsys.readouterr().out.splitlines()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")  # never opened
    (tmp_path / "labels.csv").write_text("file,label\na.png,0\nb.png,0\nc.png,1\n")
    (tmp_path / "boxes.csv").write_text("a.png,0,0,4,4\n")
    return tmp_path


def test_listed_images_must_exist(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = "  folder: {images: images, boxes: boxes.csv, labels: labels.csv}"
    assert validate(folder, data, capsys) == [
        "5:54: data.folder.labels: 2 of the listed images do not exist (first: images/b.png): "
        "add them, remove their rows, or set data.on_bad_sample: skip"
    ]
    assert validate(folder, data + "\n  limit: 1", capsys) == []
    assert validate(folder, data + "\n  on_bad_sample: skip", capsys) == []  # skipped when read


def test_boxes_csv_columns(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "boxes.csv").write_text("a.png,0,0,4\n")
    data = "  folder: {images: images, boxes: boxes.csv, labels: labels.csv}\n  limit: 1"
    assert validate(folder, data, capsys) == [
        "5:35: data.folder.boxes: boxes.csv row 1 ['a.png', '0', '0', '4']: expected file,top,left,bottom,right"
    ]


def test_masks_or_boxes_and_transform_keys(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = validate(folder, "  folder: {images: images, labels: labels.csv}", capsys)
    assert lines == ["5:11: data.folder: give exactly one of masks, boxes"]
    data = "  folder: {images: images, boxes: boxes.csv, labels: labels.csv}\n  limit: 1\n  transform: {resise: 8}"
    assert validate(folder, data, capsys) == ["7:15: data.transform: unknown key 'resise' (did you mean 'resize'?)"]


def test_extra_masks_and_a_missing_folder(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "decoys.txt").write_text("")
    data = "  folder: {images: images, boxes: boxes.csv, labels: labels.csv, extra: {decoy: decoys.txt}}\n  limit: 1"
    assert validate(folder, data, capsys) == [
        "5:81: data.folder.extra.decoy: decoys.txt is neither a folder of masks nor a boxes .csv"
    ]
    lines = validate(folder, "  imagefolder: {root: train, boxes: boxes}", capsys)
    assert [line.split(": ", 1)[1] for line in lines] == [
        "data.imagefolder.root: file not found: train (paths are relative to the spec file)",
        "data.imagefolder.boxes: file not found: boxes (paths are relative to the spec file)",
    ]


def test_imagefolder_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
    (tmp_path / "boxes").mkdir()
    data = "  imagefolder: {root: train, boxes: boxes}\n  classes: [cat, dgo]"
    assert validate(tmp_path, data, capsys) == [
        "6:12: data.classes: class folder 'dog' is not one of data.classes (did you mean 'dgo'?)"
    ]


def test_coco_json_structure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    content = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}], "categories": []}
    (tmp_path / "instances.json").write_text(json.dumps(content))
    data = "  coco: {images: images, annotations: instances.json}"
    assert validate(tmp_path, data, capsys) == [
        "5:39: data.coco.annotations: instances.json has no 'annotations' list: it is not a COCO instances file"
    ]
    content["annotations"] = []
    (tmp_path / "instances.json").write_text(json.dumps(content))
    assert validate(tmp_path, data, capsys) == []  # an image without an instance is no sample
    content["categories"] = [{"id": 7, "name": "cat"}]
    content["annotations"] = [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 2]}]
    (tmp_path / "instances.json").write_text(json.dumps(content))
    assert validate(tmp_path, data, capsys) == [
        "5:39: data.coco.annotations: 1 of the listed images do not exist (first: images/a.jpg): "
        "add them, remove their rows, or set data.on_bad_sample: skip"
    ]
