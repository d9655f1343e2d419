"""The ``model`` block's sources and settings, and the ``auto`` values, as spec errors: one
positioned line each, found without importing torch or loading anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_saliency.errors import SpecError
from pytest_saliency.spec import load_spec

DATA = "data: {npz: data.npz}\n"
REST = "attributions: {grad: {method: Saliency}}\nchecks:\n  - id: cov\n    shared_interest: {iou: {mean: '>= 0'}}\n"


def problems(tmp_path: Path, model: str, data: str = DATA) -> list[str]:
    """The problems of a spec with this ``model`` block, as ``line:col: message``."""
    (tmp_path / "data.npz").write_bytes(b"")
    path = tmp_path / "x.saliency.yaml"
    path.write_text(f"version: 1\nmodel:\n{model}\n{data}{REST}", encoding="utf-8")
    try:
        load_spec(path)
    except SpecError as error:
        return [
            f"{problem.line}:{problem.column}: {problem.message}"
            for problem in error.problems
            if "npz" not in problem.message
        ]
    return []


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("  torchvision: resnet50\n  preset: IMAGENET1K_V2\n  normalize: auto", []),
        ("  timm: convnext_tiny.fb_in22k\n  normalize: none\n  weights: data.npz\n  weights_key: state_dict_ema", []),
        ("  torchvision: ResNet50", ["3:16: model.torchvision: String should match pattern '^[a-z_][a-z0-9_]*$'"]),
        (
            "  factory: a:b\n  normalize: non",
            ["4:14: model.normalize: 'non' is not one of auto, none (did you mean 'none'?)"],
        ),
        ("  factory: a:b\n  normalize: {mean: [0.5]}", ["4:3: model.normalize: missing required key 'std'"]),
        (
            "  factory: a:b\n  weights_key: ema",
            ["3:3: model: weights_key names a key of the weights file: give weights too"],
        ),
        (
            "  timm: resnet18\n  preset: X",
            ["3:3: model: preset names a torchvision weights preset: it goes with torchvision"],
        ),
        (
            "  torchscript: data.npz\n  kwargs: {a: 1}",
            [
                "3:3: model: weights and kwargs go with factory, torchvision or timm, not with torchscript (it holds its weights)"
            ],
        ),
    ],
)
def test_model_block(tmp_path: Path, model: str, expected: list[str]) -> None:
    assert problems(tmp_path, model) == expected


def test_transform_auto_and_its_typos(tmp_path: Path) -> None:
    model = "  torchvision: resnet50\n  preset: IMAGENET1K_V2"
    folder = "data:\n  folder: {images: ., labels: l.csv, boxes: b.csv}\n"
    (tmp_path / "l.csv").write_text("file,label\n")
    (tmp_path / "b.csv").write_text("file,top,left,bottom,right\n")
    assert problems(tmp_path, model, folder + "  transform: auto\n") == []
    assert problems(tmp_path, model, folder + "  transform: autoo\n") == [
        "7:14: data.transform: 'autoo' is not one of auto (did you mean 'auto'?)"
    ]
    assert problems(
        tmp_path, model, folder + "  transform: {center_crop: 8, crop_pct: 0.9, interpolation: bicubik}\n"
    ) == [
        "7:61: data.transform.interpolation: 'bicubik' is not one of nearest, bilinear, bicubic (did you mean 'bicubic'?)"
    ]
    assert problems(tmp_path, model, folder + "  transform: {resize: 9, center_crop: 8, crop_pct: 0.9}\n") == [
        "7:14: data.transform: crop_pct sets the resize before center_crop: give center_crop and no resize"
    ]
