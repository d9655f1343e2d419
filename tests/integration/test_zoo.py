"""The zoo matrix: every torchvision classification builder, a handful of timm models and Hugging
Face ViT, ConvNeXt and Swin, each named in a spec by its source (no factory), at random init and
about the smallest input it accepts, through Saliency, IntegratedGradients (4 steps), a Shared
Interest check and a 4-step fidelity check.

One builder per family runs by default; every other builder carries the ``zoo`` marker, which the
default run leaves out (``pytest -m zoo tests/integration/test_zoo.py`` runs them). The outcome per
architecture is recorded in docs/models.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch

REPRESENTATIVES = {
    "alexnet": "alexnet",
    "vgg": "vgg11",
    "resnet": "resnet18",  # with ResNeXt and Wide ResNet
    "densenet": "densenet121",
    "inception": "googlenet",  # with Inception v3
    "squeezenet": "squeezenet1_1",
    "shufflenet": "shufflenet_v2_x0_5",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3_small",
    "mnasnet": "mnasnet0_5",
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s",
    "regnet": "regnet_x_400mf",
    "convnext": "convnext_tiny",
    "vit": "vit_b_32",
    "swin": "swin_t",
    "swin_v2": "swin_v2_t",
    "maxvit": "maxvit_t",
}
"""The builder of each torchvision family that runs by default."""
MIN_SIZE = {"alexnet": 63, "inception_v3": 75, "maxvit_t": 224, "vit_h_14": 28}
"""Inputs larger than the default 32 x 32 (MaxViT's 7 x 7 partitions need 224)."""
KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"init_weights": False},  # skips a slow truncated-normal init; random either way
    "inception_v3": {"init_weights": False},
    "vit_b_16": {"image_size": 32},
    "vit_b_32": {"image_size": 32},
    "vit_l_16": {"image_size": 32},
    "vit_l_32": {"image_size": 32},
    "vit_h_14": {"image_size": 28},
}
TIMM: dict[str, dict[str, object]] = {
    "vit_tiny_patch16_224": {"img_size": 32},
    "deit_tiny_distilled_patch16_224": {"img_size": 32},  # class and distillation tokens
    "convnext_atto": {},
    "efficientnet_b0": {},
    "resnet18": {},
}


def family(name: str) -> str:
    """The torchvision family of a builder: ``resnext50_32x4d`` -> ``resnet``."""
    for prefix, named in (
        ("efficientnet_v2", "efficientnet_v2"),
        ("swin_v2", "swin_v2"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("mobilenet_v3", "mobilenet_v3"),
        ("resnext", "resnet"),
        ("wide_resnet", "resnet"),
        ("googlenet", "inception"),
    ):
        if name.startswith(prefix):
            return named
    match = re.match(r"[a-z]+", name)
    assert match is not None
    return match.group()


def torchvision_builders() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_block(source: str, name: str, kwargs: dict[str, object]) -> str:
    """``source: name`` with ``kwargs`` and three classes (JSON is YAML)."""
    return f"{source}: {name}\nkwargs: {json.dumps({**kwargs, 'num_classes': 3})}"


def torchvision_cases() -> list[object]:
    return [
        pytest.param(
            name,
            MIN_SIZE.get(name, 32),
            id=f"torchvision-{name}",
            marks=() if REPRESENTATIVES.get(family(name)) == name else (pytest.mark.zoo,),
        )
        for name in torchvision_builders()
    ]


def timm_cases() -> list[object]:
    return [pytest.param(model_block("timm", name, kwargs), 32, id=f"timm-{name}") for name, kwargs in TIMM.items()]


ATTRIBUTIONS = """\
grad: {method: Saliency, params: {abs: true}}
ig: {method: IntegratedGradients, params: {n_steps: 4}}
"""
CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0"}
    gtc: {mean: ">= 0"}
- id: faithful
  fidelity: {steps: 4, gap: "> -1"}
"""


def zoo_data(size: int) -> dict[str, np.ndarray]:
    """Two random ``size`` x ``size`` images with a square object each, labels 0 and 1."""
    rng = np.random.default_rng(0)
    masks = np.zeros((2, size, size), bool)
    masks[0, size // 4 : size // 2, size // 4 : size // 2] = True
    masks[1, size // 2 :, size // 2 :] = True
    return {"images": rng.random((2, 3, size, size)).astype(np.float32), "masks": masks, "labels": np.arange(2)}


RunZoo = Callable[[str, int], None]


@pytest.fixture
def run_zoo(project: pytest.Pytester, helpers: SimpleNamespace) -> Iterator[RunZoo]:
    """Run the zoo spec on ``model`` (a model block) at ``size``: every item passes, with
    finite values. torch runs on one thread meanwhile: on a shared two-core machine the
    default two threads wait on each other, about three times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(model: str, size: int) -> None:
        (project.path / "zoo.npz").write_bytes(helpers.npz_bytes(zoo_data(size)))
        spec = helpers.spec_yaml(model=model, data="npz: ../zoo.npz", attributions=ATTRIBUTIONS, checks=CHECKS)
        (project.path / "specs" / "zoo.saliency.yaml").write_text(spec, encoding="utf-8")
        result = project.runpytest_inprocess("-p", "no:randomly", "-W", "ignore::UserWarning")
        rows = helpers.summary_rows(result.stdout.str())
        assert result.ret == 0, result.stdout.str()
        result.assert_outcomes(passed=4)
        assert [row["measured"] for row in rows].count("iou.mean") == 2
        assert len(rows) == 6 and all(re.fullmatch(r"-?\d+\.\d{4}", row["value"]) for row in rows), rows

    yield run
    torch.set_num_threads(threads)


def test_the_zoo_has_a_representative_of_every_torchvision_family() -> None:
    families = {family(name) for name in torchvision_builders()}
    assert families == set(REPRESENTATIVES)
    assert all(family(name) == key for key, name in REPRESENTATIVES.items())


@pytest.mark.parametrize(("name", "size"), torchvision_cases())
def test_torchvision(name: str, size: int, project: pytest.Pytester, run_zoo: RunZoo) -> None:
    model = model_block("torchvision", name, KWARGS.get(name, {}))
    if family(name) == "vit":  # torchvision zero-initialises a ViT's head: every gradient would be 0
        import torchvision.models

        network = torchvision.models.get_model(name, weights=None, num_classes=3, **KWARGS[name])
        torch.nn.init.normal_(network.heads.head.weight, std=0.02)
        torch.save(network.state_dict(), project.path / "zoo.pt")
        model += "\nweights: ../zoo.pt"
    run_zoo(model, size)


@pytest.mark.parametrize(("model", "size"), timm_cases())
def test_timm(model: str, size: int, run_zoo: RunZoo) -> None:
    pytest.importorskip("timm")
    run_zoo(model, size)


def huggingface_config(architecture: str) -> object:
    """A tiny config of ``architecture`` with three named classes, at 32 x 32 inputs."""
    import transformers

    labels = {"id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
    if architecture == "vit":
        return transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **labels,
        )
    if architecture == "convnext":
        return transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], **labels)
    return transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, **labels
    )


@pytest.mark.parametrize("architecture", ["vit", "convnext", "swin"])
def test_huggingface(architecture: str, project: pytest.Pytester, run_zoo: RunZoo) -> None:
    transformers = pytest.importorskip("transformers")
    network = transformers.AutoModelForImageClassification.from_config(huggingface_config(architecture))
    network.save_pretrained(project.path / architecture)
    run_zoo(f"huggingface: ../{architecture}", 32)
