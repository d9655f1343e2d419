"""``pytest-saliency validate`` on the image files of detection and segmentation data: the keys a
task needs and a boxes CSV's rows, without opening an image."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_saliency.cli import main
from tests.unit.spec.test_validate_image_data import SPEC


def validate(directory: Path, task: str, data: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    path = directory / "x.saliency.yaml"
    path.write_text(SPEC.format(data=data).replace("version: 1\n", f"version: 1\ntask: {task}\n"))
    main(["validate", str(path)])
    return [line.removeprefix(f"{path}:") for line in capsys.readouterr().out.splitlines()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "labels.csv").write_text("file,label\na.png,0\n")
    (tmp_path / "boxes.csv").write_text("image,x1,y1,x2,y2,label\na.png,0,0,4,4,cat\n")
    return tmp_path


def test_object_data_validates(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate(folder, "detection", "  folder: {images: images, boxes: boxes.csv}", capsys) == []
    assert validate(folder, "segmentation", "  folder: {images: images, masks: masks}", capsys) == []


def test_the_boxes_csvs_rows_are_checked(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "boxes.csv").write_text("a.png,0,0,4,4,cat\na.png,4,0,4,4,cat\n")
    assert validate(folder, "detection", "  folder: {images: images, boxes: boxes.csv}", capsys) == [
        "6:35: data.folder.boxes: boxes.csv row 2: box [4, 0, 4, 4] is empty: boxes are x1, y1, x2, y2 with "
        "x1 < x2, y1 < y2"
    ]


def test_labels_belong_to_classification(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = "  folder: {images: images, boxes: boxes.csv, labels: labels.csv}"
    assert validate(folder, "detection", data, capsys) == [
        "6:54: data.folder.labels: task: detection takes each sample's class from its boxes: remove folder.labels"
    ]
    assert validate(folder, "classification", "  folder: {images: images, boxes: boxes.csv}", capsys) == [
        "6:11: data.folder: task: classification reads each image's class from folder.labels: give a CSV file,label"
    ]
