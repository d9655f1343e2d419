"""The photos example (``examples/photos``): scikit-image's photographs written as ImageNet LOC,
COCO and a boxes folder give the same ground truth, and ``examples/photos.saliency.yaml`` passes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from examples.photos.make import CLASSES, PHOTOS, write
from pytest_saliency.loaders.data import open_source
from pytest_saliency.spec.schema import CocoSpec, DataSpec, FolderSpec, ImageFolderSpec, TransformSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/`` in a temporary folder: the spec beside freshly written data."""
    examples = tmp_path_factory.mktemp("photos") / "examples"
    write(examples / "photos" / "data")
    shutil.copy(ROOT / "examples" / "photos.saliency.yaml", examples)
    return examples


def test_the_three_layouts_give_the_same_ground_truth(photos: Path) -> None:
    """VOC's 1-based inclusive boxes, the CSV's end-exclusive ones and COCO polygons agree pixel
    for pixel after the same transform; coins, without a box, is no COCO sample."""
    pytest.importorskip("pycocotools")
    blocks: dict[str, dict[str, Any]] = {
        "imagefolder": {"imagefolder": ImageFolderSpec(root="imagenet/val", boxes="imagenet/boxes")},
        "coco": {"coco": CocoSpec(images="coco/images", annotations="coco/instances.json")},
        "folder": {"folder": FolderSpec(images="folder/images", labels="folder/labels.csv", boxes="folder/boxes.csv")},
    }
    found = {}
    for kind, block in blocks.items():
        spec = DataSpec(**block, classes=list(CLASSES), transform=TransformSpec(resize=[64, 64]))
        source = open_source(spec, photos / "photos" / "data", [])
        batch = source.read(range(len(source)))
        names = [Path(sample.shown).stem for sample in source.samples]  # type: ignore[attr-defined]
        found[kind] = {
            name: (mask, int(label)) for name, mask, label in zip(names, batch.masks, batch.labels, strict=True)
        }
    assert set(found["folder"]) == set(found["imagefolder"]) == set(PHOTOS) == set(found["coco"]) | {"coins"}
    for name, (mask, label) in found["folder"].items():
        assert label == CLASSES.index(PHOTOS[name][0])
        assert found["imagefolder"][name][1] == label and bool((found["imagefolder"][name][0] == mask).all())
        if name != "coins":
            assert found["coco"][name][1] == label and bool((found["coco"][name][0] == mask).all())
    assert not found["folder"]["coins"][0].any() and found["folder"]["rocket"][0].any()


def test_the_photos_example_spec_passes(photos: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(photos / "photos.saliency.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b4 passed in\b", result.stdout), result.stdout[-3000:]
