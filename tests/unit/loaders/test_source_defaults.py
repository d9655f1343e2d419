"""What model sources carry about their input, read offline: torchvision presets, timm's
pretrained_cfg, Hugging Face processor configs; and the transform keys that express them."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders import transform
from pytest_saliency.loaders.model_sources import (
    _processor_normalize,
    _processor_transform,
    huggingface_classes,
    source_defaults,
)
from pytest_saliency.spec.schema import ModelSpec, NormalizeSpec, TransformSpec

IMAGENET = NormalizeSpec(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model source touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("name", "preset", "expected"),
    [  # torchvision's documented evaluation transforms of these presets
        ("resnet50", "IMAGENET1K_V2", TransformSpec(resize=232, center_crop=224, interpolation="bilinear")),
        ("resnet50", "IMAGENET1K_V1", TransformSpec(resize=256, center_crop=224, interpolation="bilinear")),
        ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", TransformSpec(resize=384, center_crop=384, interpolation="bicubic")),
        ("efficientnet_b3", "IMAGENET1K_V1", TransformSpec(resize=320, center_crop=300, interpolation="bicubic")),
    ],
)
def test_a_torchvision_preset_gives_its_transform_normalisation_and_categories(
    name: str, preset: str, expected: TransformSpec
) -> None:
    defaults = source_defaults(ModelSpec(torchvision=name, preset=preset), Path("."))
    assert defaults.transform == expected
    assert defaults.normalize == IMAGENET
    assert defaults.classes is not None and len(defaults.classes) == 1000
    assert defaults.classes[:2] == ["tench", "goldfish"]
    assert defaults.origin == f"torchvision {name} preset {preset}"


def test_a_torchvision_model_without_preset_carries_nothing() -> None:
    defaults = source_defaults(ModelSpec(torchvision="resnet18"), Path("."))
    assert (defaults.normalize, defaults.transform, defaults.classes) == (None, None, None)


def test_preset_categories_are_left_out_when_the_model_has_other_classes() -> None:
    spec = ModelSpec(torchvision="resnet18", preset="IMAGENET1K_V1", kwargs={"num_classes": 3})
    defaults = source_defaults(spec, Path("."))
    assert defaults.classes is None
    assert defaults.notes == ("classes: the preset's 1000 categories are not used, the model has 3",)


def test_an_unknown_preset_is_one_line_with_a_suggestion() -> None:
    with pytest.raises(SpecRuntimeError) as caught:
        source_defaults(ModelSpec(torchvision="resnet50", preset="IMAGENET1K_V3"), Path("."))
    assert caught.value.location == ("model", "preset")
    assert caught.value.message.startswith("ResNet50_Weights has no preset 'IMAGENET1K_V3' (did you mean")
    assert "(its presets: IMAGENET1K_V1, IMAGENET1K_V2)" in caught.value.message


@pytest.mark.usefixtures("offline")
def test_timm_pretrained_cfg_gives_crop_pct_interpolation_and_normalisation() -> None:
    pytest.importorskip("timm")
    defaults = source_defaults(ModelSpec(timm="convnext_tiny.fb_in22k"), Path("."))
    # timm's convnext_tiny.fb_in22k: input 224, crop_pct 0.875, bicubic, ImageNet mean and std
    assert defaults.transform == TransformSpec(center_crop=224, crop_pct=0.875, interpolation="bicubic")
    assert defaults.normalize == IMAGENET
    assert defaults.origin == "timm convnext_tiny.fb_in22k pretrained_cfg"
    vit = source_defaults(ModelSpec(timm="test_vit"), Path("."))
    assert vit.normalize == NormalizeSpec(mean=[0.5] * 3, std=[0.5] * 3)
    assert vit.transform == TransformSpec(center_crop=160, crop_pct=0.95, interpolation="bicubic")


def test_crop_pct_resizes_the_shorter_side_as_timm_does() -> None:
    spec = TransformSpec(center_crop=224, crop_pct=0.875, interpolation="bicubic")
    assert transform.resize_of(spec) == 256  # floor(224 / 0.875)
    assert transform.output_size(spec, (300, 400)) == (224, 224)
    image = torch.rand(3, 300, 400)
    expected = v2.Compose(
        [v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(224)]
    )(image)
    out, _ = transform.apply(spec, image, {})
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (  # ViTImageProcessor: an exact size
            {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2},
            TransformSpec(resize=[224, 224], interpolation="bilinear"),
        ),
        (  # ConvNextImageProcessor below 384: resize to edge / crop_pct, crop the edge
            {"do_resize": True, "size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3},
            TransformSpec(center_crop=224, crop_pct=0.875, interpolation="bicubic"),
        ),
        (  # ConvNextImageProcessor at 384 and above: a square warp
            {"do_resize": True, "size": {"shortest_edge": 384}, "crop_pct": 0.875, "resample": 3},
            TransformSpec(resize=[384, 384], interpolation="bicubic"),
        ),
        (  # DeiT / BEiT style: resize then crop
            {
                "do_resize": True,
                "size": {"height": 256, "width": 256},
                "do_center_crop": True,
                "crop_size": {"height": 224, "width": 224},
                "resample": 3,
            },
            TransformSpec(resize=[256, 256], center_crop=[224, 224], interpolation="bicubic"),
        ),
        ({"do_resize": False, "size": {"height": 224, "width": 224}}, None),
    ],
)
def test_an_image_processor_config_becomes_a_transform(settings: dict[str, object], expected: TransformSpec) -> None:
    assert _processor_transform(settings) == (expected, ())


def test_a_rescale_factor_other_than_1_over_255_is_folded_into_the_normalisation() -> None:
    plain = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "rescale_factor": 1 / 255}
    assert _processor_normalize(plain) == (NormalizeSpec(mean=[0.5] * 3, std=[0.25] * 3), ())
    # pixels x 255 / 127.5 = 2x, then (2x - 1) / 1: that is (x - 0.5) / 0.5
    folded, notes = _processor_normalize(
        {**plain, "image_mean": [1.0] * 3, "image_std": [1.0] * 3, "rescale_factor": 1 / 127.5}
    )
    assert folded is not None
    torch.testing.assert_close(torch.tensor(folded.mean), torch.full((3,), 0.5))
    torch.testing.assert_close(torch.tensor(folded.std), torch.full((3,), 0.5))
    assert notes == ("normalize: the processor's rescale_factor 0.00784314 folded into mean and std",)
    assert _processor_normalize({**plain, "do_normalize": False}) == (None, ())


def test_huggingface_class_names_come_from_config_json(tmp_path: Path) -> None:
    config = {"id2label": {"1": "dog", "0": "cat", "3": "yak", "2": "fox"}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert huggingface_classes(tmp_path) == ["cat", "dog", "fox", "yak"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}), encoding="utf-8")
    assert huggingface_classes(tmp_path) is None
