"""The zoo matrix: every torchvision classification builder, six timm models and Hugging Face
ViT, DeiT, ConvNeXt and Swin, each named in a spec by its source (no factory), at random init, on two
images of about the smallest size each accepts. Per architecture:

- the spec runs Saliency, IntegratedGradients (4 steps) and LayerGradCam at ``layer: auto``
  through a Shared Interest and a 4-step fidelity check: every item passes with finite values,
  and the report names the layer ``layer: auto`` picked and how it is read (``LAYER_PICKED``);
- attention rollout and attention relevance run in the spec on every ViT and DeiT; on windowed
  attention (Swin, MaxViT) and on a network without attention each is one line at its spec key;
- contextual decomposition, called directly on the same architecture: ``β + γ`` are the logits
  within 1e-4 of the largest logit and both parts carry something, or, where a rule is missing,
  one line names what it lacks (``CD_REFUSALS``). On the ViT of each library the spec's
  ``region`` check measures the share that the direct decomposition gives.

One torchvision builder per family, the timm models but the one with registers and the Hugging Face
models run by default; every other case carries the ``zoo`` marker, which the default run leaves out (``pytest -m zoo tests/integration/test_zoo.py`` runs them). The outcome per
architecture is recorded in docs/models.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

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
    "vit": "vit_b_16",
    "swin": "swin_t",
    "swin_v2": "swin_v2_t",
    "maxvit": "maxvit_t",
}
"""The builder of each torchvision family that runs by default."""
MIN_SIZE = {"alexnet": 63, "inception_v3": 75, "maxvit_t": 224, "vit_b_32": 64, "vit_l_32": 64, "vit_h_14": 28}
"""Inputs larger than the default 32 x 32 (MaxViT's 7 x 7 partitions need 224; a ViT with
32-pixel patches gets a 2 x 2 grid of them, so that Grad-CAM's map is not one constant cell)."""
KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"init_weights": False},  # skips a slow truncated-normal init; random either way
    "inception_v3": {"init_weights": False},
    "vit_b_16": {"image_size": 32},
    "vit_b_32": {"image_size": 64},
    "vit_l_16": {"image_size": 32},
    "vit_l_32": {"image_size": 64},
    "vit_h_14": {"image_size": 28},
}
TIMM: dict[str, dict[str, object]] = {
    "vit_tiny_patch16_224": {"img_size": 32},
    "deit_tiny_distilled_patch16_224": {"img_size": 32},  # class and distillation tokens
    "vit_little_patch16_reg4_gap_256": {"img_size": 32},  # registers, no class token, layer scale; -m zoo only
    "convnext_atto": {},
    "efficientnet_b0": {},
    "resnet18": {},
}

GRID, VIT_TOKENS = "(grid)", "(tokens: 1 prefix, grid 2x2)"
LAYER_PICKED = {
    "alexnet": f"features.10 {GRID}",
    **{name: f"features.{index} {GRID}" for name, index in (("vgg11", 18), ("vgg11_bn", 26), ("vgg13", 22))},
    **{name: f"features.{index} {GRID}" for name, index in (("vgg13_bn", 32), ("vgg16", 28), ("vgg16_bn", 41))},
    **{name: f"features.{index} {GRID}" for name, index in (("vgg19", 34), ("vgg19_bn", 50))},
    "resnet": f"layer4.0.bn1 {GRID}",  # bottleneck blocks: layer4's first stride-2 convolution comes after it
    "resnet18": f"layer3 {GRID}",
    "resnet34": f"layer3 {GRID}",
    "densenet": f"features.transition3.conv {GRID}",
    "googlenet": f"inception4e {GRID}",
    "inception_v3": f"Mixed_7a.branch7x7x3_3 {GRID}",
    "squeezenet1_0": f"features.10 {GRID}",
    "squeezenet1_1": f"features.7 {GRID}",
    "shufflenet": f"stage4.0.branch2.1 {GRID}",
    "mobilenet_v2": f"features.14.conv.0 {GRID}",
    "mobilenet_v3_small": f"features.9.block.0 {GRID}",
    "mobilenet_v3_large": f"features.13.block.0 {GRID}",
    "mnasnet": f"layers.12.0.layers.1 {GRID}",
    "efficientnet": f"features.6.0.block.0 {GRID}",
    "efficientnet_v2": f"features.6.0.block.0 {GRID}",
    "regnet": f"trunk_output.block4.block4-0.f.a {GRID}",
    "convnext": f"features.6.0 {GRID}",
    "vit_b_16": f"encoder.layers.encoder_layer_11.ln_1 {VIT_TOKENS}",
    "vit_b_32": f"encoder.layers.encoder_layer_11.ln_1 {VIT_TOKENS}",
    "vit_l_16": f"encoder.layers.encoder_layer_23.ln_1 {VIT_TOKENS}",
    "vit_l_32": f"encoder.layers.encoder_layer_23.ln_1 {VIT_TOKENS}",
    "vit_h_14": f"encoder.layers.encoder_layer_31.ln_1 {VIT_TOKENS}",
    "swin": "features.5 (channels-last)",
    "swin_v2": "features.5 (channels-last)",
    "maxvit": f"blocks.3 {GRID}",
    "timm-vit_tiny_patch16_224": f"blocks.11.norm1 {VIT_TOKENS}",
    "timm-deit_tiny_distilled_patch16_224": "blocks.11.norm1 (tokens: 2 prefix, grid 2x2)",
    "timm-convnext_atto": f"stages.3.downsample.0 {GRID}",
    "timm-efficientnet_b0": f"blocks.5.0.bn1 {GRID}",
    "timm-resnet18": f"layer3 {GRID}",
    "timm-vit_little_patch16_reg4_gap_256": "blocks.13.norm1 (tokens: 4 prefix, grid 2x2)",
    "huggingface-vit": "vit.layers.1.layernorm_before (tokens: 1 prefix, grid 4x4)",
    "huggingface-convnext": f"convnext.encoder.stages.3.downsampling_layer.0 {GRID}",
    "huggingface-deit": "deit.layers.1.layernorm_before (tokens: 2 prefix, grid 4x4)",
    "huggingface-swin": "swin.encoder.layers.1.blocks.0.layernorm_before (tokens: 0 prefix, grid 4x4)",
}
"""What the report says ``layer: auto`` picked, ``"<layer> (<how it is read>)"``, per torchvision
builder or else family, and per timm and Hugging Face case. At these small inputs the last stage
of most CNNs is 1 x 1, so the pick is the last feature map larger than that."""

WINDOWED = "attends within windows, so there is no attention between all tokens to roll out"
NO_ATTENTION = "the model has no self-attention this method can read"
ATTENTION_REFUSALS = {
    "swin": f"the model ShiftedWindowAttention {WINDOWED}",
    "swin_v2": f"the model ShiftedWindowAttentionV2 {WINDOWED}",
    "maxvit": f"the model RelativePositionalMultiHeadAttention {WINDOWED}",
}
"""The words of the one-line refusal of ``attention_rollout`` and ``attention_relevance`` per
torchvision family (ViTs run them; the families not named here have no attention)."""

CD_REFUSALS = {
    "shufflenet": "no rule for Tensor.chunk in layer 'stage2.1' (torchvision.InvertedResidual)",
    "swin_v2": "(CD decomposes Swin V1's window attention in eval mode (not V2's cosine attention))",
    "maxvit": "no rule for torch.chunk in layer 'blocks.0.layers.0.layers.window_attention.attn_layer.1' "
    "(torchvision.RelativePositionalMultiHeadAttention)",
    "timm-efficientnet_b0": "no rule for torch.nn.functional.batch_norm in layer 'bn1' (timm.layers.norm_act.BatchNormAct2d)",
    **{
        f"huggingface-{name}": f"layer '<model>' (transformers.models.{name}.modeling_{name}.{model}) "
        "(torch.fx cannot trace its forward: TraceError: Proxy object cannot be iterated."
        for name, model in (
            ("convnext", "ConvNextForImageClassification"),
            ("deit", "DeiTForImageClassificationWithTeacher"),
            ("swin", "SwinForImageClassification"),
        )
    },
}
"""Where contextual decomposition has no rule: words of its one-line refusal, per torchvision
family or case id."""

CAM = "cam: {method: LayerGradCam, layer: auto}\n"
ATTENTION = "rollout: {method: attention_rollout}\nrelevance: {method: attention_relevance}\n"
REGION = '- id: region\n  region:\n    mask: region\n    share: {mean: "<= 1"}\n'


@dataclass(frozen=True)
class Expected:
    """What one architecture does in the zoo."""

    layer: str
    """``layer: auto``'s pick as the report names it."""
    attention: str | None
    """None: rollout and relevance run; else the words of their one-line refusal."""
    decomposition: str | None
    """None: contextual decomposition conserves the logits; else the words of its refusal."""


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


def zoo_data(size: int) -> dict[str, np.ndarray]:
    """Two random ``size`` x ``size`` images with a square object each, labels 0 and 1, and a
    ``region``: half the pixels, drawn at random (a box could miss every path to the logits: in
    timm's ResNet at init, whose residual branches start at zero, only the strided 1 x 1
    shortcuts reach them, and they read one corner)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((2, size, size), bool)
    masks[0, size // 4 : size // 2, size // 4 : size // 2] = True
    masks[1, size // 2 :, size // 2 :] = True
    images = rng.random((2, 3, size, size)).astype(np.float32)
    return {"images": images, "masks": masks, "labels": np.arange(2), "region": rng.random((2, size, size)) < 0.5}


def logits_of(network: nn.Module, inputs: Tensor) -> Tensor:
    """``(N, classes)`` logits of a plain module or of a Hugging Face model's output object."""
    output = network(inputs)
    return output if isinstance(output, Tensor) else output.logits


def decomposes(network: nn.Module, inputs: Tensor, region: Tensor, refusal: str | None) -> tuple[Tensor, Tensor] | None:
    """Contextual decomposition of ``network`` on ``inputs`` ``(N, C, H, W)`` into ``region``
    ``(N, H, W)`` and the rest: ``(beta, gamma)`` after asserting that they conserve the logits,
    or None after asserting the one-line refusal containing ``refusal``."""
    from pytest_saliency.metrics.decomposition import UnsupportedLayerError, contextual_decomposition

    if refusal is not None:
        with pytest.raises(UnsupportedLayerError) as raised:
            contextual_decomposition(network, inputs, region)
        message = str(raised.value)
        assert "\n" not in message and message.startswith("contextual decomposition has no rule for "), message
        assert refusal in message, message
        return None
    with torch.no_grad():
        logits = logits_of(network, inputs)
    beta, gamma = contextual_decomposition(network, inputs, region)
    scale = logits.abs().max()
    assert (beta + gamma - logits).abs().max() <= 1e-4 * scale
    assert beta.abs().max() > 1e-3 * scale and gamma.abs().max() > 1e-3 * scale  # both parts carry something
    return beta, gamma


def region_share(beta: Tensor, gamma: Tensor, target: Tensor) -> float:
    """The mean over samples of ``|β̃_t| / (|β̃_t| + |γ̃_t|)`` on logits centred over the classes."""
    centred = [(part - part.mean(dim=1, keepdim=True)).gather(1, target.view(-1, 1)).abs() for part in (beta, gamma)]
    return float((centred[0] / (centred[0] + centred[1])).mean())


def assert_items(results: Path, spec: str, expected: Expected, helpers: SimpleNamespace, output: str) -> None:
    """The spec's items in ``results`` (``--saliency-json``): two per method, passed with finite
    values, Grad-CAM's naming the layer picked; for the attention methods on a model without
    global attention, errors whose one line names the spec key and ``expected.attention``."""
    by_method: dict[str, list[dict[str, object]]] = {}
    for item in json.loads(results.read_text())["results"]:
        if item["check"] != "region":
            by_method.setdefault(item["method"], []).append(item)
    for method in ("grad", "ig", "cam", *(("rollout", "relevance") if expected.attention is None else ())):
        assert [item["status"] for item in by_method[method]] == ["passed", "passed"], output
        values = [m["value"] for item in by_method[method] for m in item["measurements"]]
        assert len(values) == 3 and all(np.isfinite(values)), values
    for item in by_method["cam"]:
        assert f"cam: attributes to layer {expected.layer}" in item["details"], item["details"]
    if expected.attention is None:
        return
    for method in ("rollout", "relevance"):
        key = f"specs/zoo.saliency.yaml:{helpers.position(spec, f'attention_{method}')}: attributions.{method}.method: "
        for item in by_method[method]:
            message = str(item["message"])
            assert item["status"] == "error" and message.startswith(key), output
            assert "\n" not in message and expected.attention in message, message


RunZoo = Callable[..., None]


@pytest.fixture
def run_zoo(project: pytest.Pytester, helpers: SimpleNamespace) -> Iterator[RunZoo]:
    """Run the zoo spec on ``model`` (a model block) at ``size`` and decompose ``network`` (the
    same architecture) as ``expected`` says: see the module doc. With ``region`` the spec's
    model is ``network`` itself (its weights or folder) and a ``region`` check must measure the
    share the direct decomposition gives; ``normalize`` is the ``(mean, std)`` the source
    applies before the network. torch runs on one thread meanwhile: on a shared two-core machine
    the default two threads wait on each other, about three times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the random init of the test's network and of the spec's

    def run(
        model: str,
        size: int,
        network: nn.Module,
        expected: Expected,
        *,
        region: bool = False,
        normalize: tuple[list[float], list[float]] | None = None,
    ) -> None:
        data = zoo_data(size)
        (project.path / "zoo.npz").write_bytes(helpers.npz_bytes(data))
        checks = helpers.COVERAGE_AND_FIDELITY + (REGION if region else "")
        attributions = helpers.GRADIENT_METHODS + CAM + ATTENTION
        spec = helpers.spec_yaml(model=model, data="npz: ../zoo.npz", attributions=attributions, checks=checks)
        (project.path / "specs" / "zoo.saliency.yaml").write_text(spec, encoding="utf-8")
        result = project.runpytest_inprocess(
            "-p", "no:randomly", "-W", "ignore::UserWarning", "--saliency-json=zoo.json"
        )
        output = result.stdout.str()
        helpers.assert_no_traceback(output)
        assert_items(project.path / "zoo.json", spec, expected, helpers, output)

        inputs = torch.as_tensor(data["images"])
        if normalize is not None:
            mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in normalize)
            inputs = (inputs - mean) / std
        parts = decomposes(network.eval(), inputs, torch.as_tensor(data["region"]), expected.decomposition)
        if region:
            assert parts is not None
            items = json.loads((project.path / "zoo.json").read_text())["results"]
            (checked,) = [item for item in items if item["check"] == "region"]
            (share,) = [m["value"] for m in checked["measurements"]]
            assert checked["status"] == "passed", output
            assert share == pytest.approx(region_share(*parts, torch.as_tensor(data["labels"])), abs=1e-4)

    yield run
    torch.set_num_threads(threads)


def test_the_zoo_has_a_representative_of_every_torchvision_family() -> None:
    families = {family(name) for name in torchvision_builders()}
    assert families == set(REPRESENTATIVES)
    assert all(family(name) == key for key, name in REPRESENTATIVES.items())


@pytest.mark.parametrize(("name", "size"), torchvision_cases())
def test_torchvision(name: str, size: int, project: pytest.Pytester, run_zoo: RunZoo) -> None:
    import torchvision.models

    kwargs = KWARGS.get(name, {})
    model = model_block("torchvision", name, kwargs)
    network = torchvision.models.get_model(name, weights=None, num_classes=3, **kwargs)
    vit = family(name) == "vit"
    if vit:  # torchvision zero-initialises a ViT's head: every gradient would be 0
        torch.nn.init.normal_(network.heads.head.weight, std=0.02)
    if family(name) == "squeezenet":  # its logits pass a ReLU: at init a class is often 0 on every image
        torch.nn.init.constant_(network.classifier[1].bias, 1.0)
    if family(name) in ("vit", "squeezenet"):
        torch.save(network.state_dict(), project.path / "zoo.pt")
        model += "\nweights: ../zoo.pt"
    expected = Expected(
        LAYER_PICKED.get(name) or LAYER_PICKED[family(name)],
        None if vit else ATTENTION_REFUSALS.get(family(name), NO_ATTENTION),
        CD_REFUSALS.get(family(name)),
    )
    run_zoo(model, size, network, expected, region=name == REPRESENTATIVES["vit"])


def timm_cases() -> list[object]:
    return [pytest.param(name, id=name, marks=(pytest.mark.zoo,) if "reg4" in name else ()) for name in TIMM]


@pytest.mark.parametrize("name", timm_cases())
def test_timm(name: str, project: pytest.Pytester, run_zoo: RunZoo) -> None:
    timm = pytest.importorskip("timm")
    network = timm.create_model(name, pretrained=False, num_classes=3, **TIMM[name])
    model = model_block("timm", name, TIMM[name])
    vit = name.startswith(("vit", "deit"))
    if vit:
        torch.save(network.state_dict(), project.path / "zoo.pt")
        model += "\nweights: ../zoo.pt"
    expected = Expected(LAYER_PICKED[f"timm-{name}"], None if vit else NO_ATTENTION, CD_REFUSALS.get(f"timm-{name}"))
    config = network.pretrained_cfg
    run_zoo(
        model, 32, network, expected, region=name == "vit_tiny_patch16_224", normalize=(config["mean"], config["std"])
    )


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
    if architecture == "deit":  # class and distillation tokens, and a head on each (the logits are their mean)
        return transformers.DeiTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            architectures=["DeiTForImageClassificationWithTeacher"],
            **labels,
        )
    if architecture == "convnext":
        return transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], **labels)
    return transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2, **labels
    )


@pytest.mark.parametrize("architecture", ["vit", "deit", "convnext", "swin"])
def test_huggingface(architecture: str, project: pytest.Pytester, run_zoo: RunZoo) -> None:
    transformers = pytest.importorskip("transformers")
    network = transformers.AutoModelForImageClassification.from_config(huggingface_config(architecture))
    network.save_pretrained(project.path / architecture)
    attention = {"vit": None, "deit": None, "swin": f"the model SwinAttention {WINDOWED}"}.get(
        architecture, NO_ATTENTION
    )
    case = f"huggingface-{architecture}"
    expected = Expected(LAYER_PICKED[case], attention, CD_REFUSALS.get(case))
    run_zoo(f"huggingface: ../{architecture}", 32, network, expected, region=architecture == "vit")
