"""Model sources by name, end to end: a torchvision builder with a preset, a timm model with its
pretrained_cfg, a Hugging Face folder with a processor config. Each runs the same checks as the
same network through a hand-written factory with the normalisation typed in, and must measure the
same values, behind the source's own normalisation, named in the summary with its origin."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

WriteSpec = Callable[..., Path]

FACTORIES = """\
import torch
import torchvision
from torch import nn


def mobilenet():
    return torchvision.models.mobilenet_v3_small(num_classes=3)


def vit():
    import timm

    return timm.create_model("test_vit", pretrained=False, img_size=16, patch_size=4, num_classes=3)


class Logits(nn.Module):
    def __init__(self, folder):
        super().__init__()
        from transformers import AutoModelForImageClassification

        self.model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)

    def forward(self, x):
        return self.model(pixel_values=x).logits


def huggingface(folder):
    return Logits(folder)
"""

DATA = "npz: ../data.npz"


def normalize_yaml(mean: list[float], std: list[float]) -> str:
    return f"normalize: {{mean: {mean}, std: {std}}}"


def rows_by_spec(output: str, helpers: SimpleNamespace) -> dict[str, list[tuple[str, str, str, str]]]:
    """``{spec: [(check, method, measured, value), ...]}`` of the summary."""
    rows: dict[str, list[tuple[str, str, str, str]]] = {}
    for row in helpers.summary_rows(output):
        rows.setdefault(row["spec"], []).append((row["check"], row["method"], row["measured"], row["value"]))
    return rows


def run_pair(
    project: pytest.Pytester,
    write_spec: WriteSpec,
    helpers: SimpleNamespace,
    by_name: str,
    by_factory: str,
    **spec: str,
) -> pytest.RunResult:
    """Run the source spec ``by_name`` and the factory spec ``by_factory`` (model blocks) and
    assert that every measured value is the same in both."""
    project.makepyfile(factories=FACTORIES)
    arguments = {
        "attributions": helpers.GRADIENT_METHODS,
        "checks": helpers.COVERAGE_AND_FIDELITY,
        "data": DATA,
        **spec,
    }
    write_spec("a", model=by_name, **arguments)
    write_spec("b", model=by_factory, **arguments)
    result = project.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(passed=8)
    rows = rows_by_spec(result.stdout.str(), helpers)
    assert len(rows["a"]) == 6 and rows["a"] == rows["b"]
    return result


def test_torchvision_by_name_with_a_preset_measures_as_the_factory_with_its_normalisation(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    torch.manual_seed(0)
    torch.save(mobilenet_v3_small(num_classes=3).state_dict(), project.path / "w.pt")
    preset = MobileNet_V3_Small_Weights.IMAGENET1K_V1.transforms()  # the preset's own numbers
    assert preset.mean == [0.485, 0.456, 0.406] and preset.std == [0.229, 0.224, 0.225]
    result = run_pair(
        project,
        write_spec,
        helpers,
        "torchvision: mobilenet_v3_small\npreset: IMAGENET1K_V1\nkwargs: {num_classes: 3}\nweights: ../w.pt",
        f"factory: factories:mobilenet\nweights: ../w.pt\n{normalize_yaml(preset.mean, preset.std)}",
    )
    result.stdout.fnmatch_lines(
        [
            "a normalize mean [[]0.485, 0.456, 0.406] std [[]0.229, 0.224, 0.225] "
            "(from torchvision mobilenet_v3_small preset IMAGENET1K_V1); transform none",
            "a classes: the preset's 1000 categories are not used, the model has 3",
            "b normalize mean [[]0.485, 0.456, 0.406] std [[]0.229, 0.224, 0.225] (from the spec); transform none",
        ]
    )


def test_timm_by_name_takes_the_normalisation_of_its_pretrained_cfg(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    network = timm.create_model("test_vit", pretrained=False, img_size=16, patch_size=4, num_classes=3)
    torch.save(network.state_dict(), project.path / "w.pt")
    config = network.pretrained_cfg  # test_vit's: mean and std 0.5
    mean, std = list(config["mean"]), list(config["std"])
    result = run_pair(
        project,
        write_spec,
        helpers,
        "timm: test_vit\nkwargs: {img_size: 16, patch_size: 4, num_classes: 3}\nweights: ../w.pt",
        f"factory: factories:vit\nweights: ../w.pt\n{normalize_yaml(mean, std)}",
    )
    result.stdout.fnmatch_lines(
        ["a normalize mean [[]0.5, 0.5, 0.5] std [[]0.5, 0.5, 0.5] (from timm test_vit pretrained_cfg)*"]
    )


@pytest.fixture
def vit_folder(project: pytest.Pytester) -> Path:
    """A tiny ViT saved with ``save_pretrained`` beside its image processor, classes named."""
    transformers = pytest.importorskip("transformers")
    folder = project.path / "vit"
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "circle", 1: "square", 2: "triangle"},
        label2id={"circle": 0, "square": 1, "triangle": 2},
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    processor.save_pretrained(folder)
    return folder


def test_huggingface_folder_takes_its_processor_normalisation_and_class_names(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace, vit_folder: Path
) -> None:
    settings = json.loads((vit_folder / "preprocessor_config.json").read_text())
    mean, std = settings["image_mean"], settings["image_std"]
    result = run_pair(
        project,
        write_spec,
        helpers,
        "huggingface: ../vit",
        f"factory: factories:huggingface\nkwargs: {{folder: {str(vit_folder)!r}}}\n{normalize_yaml(mean, std)}",
    )
    result.stdout.fnmatch_lines(
        [
            "a normalize mean [[]0.5, 0.4, 0.3] std [[]0.2, 0.25, 0.3] "
            "(from huggingface ../vit preprocessor_config.json); transform none",
        ]
    )


def test_huggingface_class_names_name_the_per_class_items_at_collection(
    project: pytest.Pytester, write_spec: WriteSpec, vit_folder: Path
) -> None:
    checks = "- id: cov\n  shared_interest:\n    iou: {mean: '>= 0'}\n    per_class: true\n"
    write_spec(model="huggingface: ../vit", data=DATA, checks=checks)
    result = project.runpytest_inprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml::cov[[]grad-circle]",
            "specs/x.saliency.yaml::cov[[]grad-square]",
            "specs/x.saliency.yaml::cov[[]grad-triangle]",
        ]
    )


def test_what_the_spec_writes_wins_over_the_source_with_a_note(
    project: pytest.Pytester, write_spec: WriteSpec, vit_folder: Path
) -> None:
    model = "huggingface: ../vit\nnormalize: {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}"
    write_spec(model=model, data=DATA, checks="- id: cov\n  shared_interest:\n    iou: {mean: '>= 0'}\n")
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "x normalize mean [[]0.5, 0.5, 0.5] std [[]0.5, 0.5, 0.5] (from the spec); transform none",
            "x normalize: the spec's differs from huggingface ../vit preprocessor_config.json's "
            "mean [[]0.5, 0.4, 0.3] std [[]0.2, 0.25, 0.3]",
        ]
    )


CHECK_FOLDER = """\
from pytest_saliency.spec.schema import TransformSpec


def test_labels_follow_the_model_class_names(saliency_engine):
    engine = saliency_engine("specs/x.saliency.yaml")
    assert engine.spec.data.transform == TransformSpec(resize=[16, 16], interpolation="bilinear")
    assert engine.spec.data.classes == ["triangle", "circle", "square"]
    shard = engine.shard()
    assert shard.images.shape[-2:] == (16, 16)
    assert shard.batch.labels.tolist() == [1, 2, 0, 1]  # circle, square, triangle, circle by id2label
"""


def test_transform_auto_and_class_names_of_a_huggingface_folder_apply_to_image_files(
    project: pytest.Pytester, write_spec: WriteSpec, vit_folder: Path
) -> None:
    from PIL import Image

    config = json.loads((vit_folder / "config.json").read_text())
    config["id2label"] = {"0": "triangle", "1": "circle", "2": "square"}  # not the folders' sorted order
    config["label2id"] = {name: int(index) for index, name in config["id2label"].items()}
    (vit_folder / "config.json").write_text(json.dumps(config))
    (project.path / "images").mkdir()
    rows, boxes = ["file,label"], ["file,top,left,bottom,right"]
    for index, label in enumerate(["circle", "square", "triangle", "circle"]):
        pixels = torch.zeros(24, 20, 3, dtype=torch.uint8)
        pixels[4 + index : 12 + index, 4:12, 0] = 255
        Image.fromarray(pixels.numpy()).save(project.path / "images" / f"s{index}.png")
        rows.append(f"s{index}.png,{label}")
        boxes.append(f"s{index}.png,{4 + index},4,{12 + index},12")
    (project.path / "labels.csv").write_text("\n".join(rows) + "\n")
    (project.path / "boxes.csv").write_text("\n".join(boxes) + "\n")
    data = "folder: {images: ../images, labels: ../labels.csv, boxes: ../boxes.csv}\ntransform: auto"
    write_spec(
        model="huggingface: ../vit", data=data, checks="- id: cov\n  shared_interest:\n    iou: {mean: '>= 0'}\n"
    )
    project.makepyfile(test_folder=CHECK_FOLDER)
    result = project.runpytest_inprocess("-p", "no:randomly", "specs", "test_folder.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "x normalize mean [[]0.5, 0.4, 0.3] std [[]0.2, 0.25, 0.3] (from huggingface ../vit preprocessor_config.json); "
            "transform resize [[]16, 16], bilinear (from huggingface ../vit preprocessor_config.json)"
        ]
    )


def test_transform_auto_without_a_source_that_has_one_is_a_spec_error(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    data = "folder: {images: ../images, labels: ../labels.csv, boxes: ../boxes.csv}\ntransform: auto"
    (project.path / "images").mkdir()
    (project.path / "labels.csv").write_text("file,label\n")
    (project.path / "boxes.csv").write_text("file,top,left,bottom,right\n")
    text = write_spec(model="torchvision: resnet18", data=data).read_text()
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{helpers.position(text, 'auto')}: data.transform: auto takes the model source's "
            "resize and crop: add model.preset (a torchvision preset has them), or write resize and center_crop"
        ]
    )
