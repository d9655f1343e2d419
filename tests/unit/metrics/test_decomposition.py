"""Contextual decomposition: completeness (β + γ = logits), exact edge cases, batching, errors.

Completeness is checked in float64 with ``rtol = atol = 1e-9`` (observed: ~1e-15), on a
float32 ResNet-18 with ``rtol = 1e-4`` relative to the largest logit (observed: ~5e-7), and on
torchvision's VGG-11, MobileNetV2, MobileNetV3-small, EfficientNet-B0, DenseNet-121, ResNet-18
and ResNet-50 at 224x224 in float32 with ``1e-3`` relative to the largest logit (observed: at
most 1.5e-6).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torchvision import models
from torchvision.models import VisionTransformer, resnet18
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.ops import SqueezeExcitation, StochasticDepth

from pytest_saliency.metrics import decomposition
from pytest_saliency.metrics.decomposition import (
    UnsupportedLayerError,
    contextual_decomposition,
    interaction,
    propagate_affine,
    region_importance,
    register_rule,
    registered_types,
)

TOL = {"rtol": 1e-9, "atol": 1e-9}
DT = torch.float64


def _bn_with_stats(bn: nn.modules.batchnorm._BatchNorm, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn.eval()


def _block_with_stats(block: nn.Module, seed: int) -> nn.Module:
    for i, m in enumerate(block.modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            _bn_with_stats(m, seed + i)
    return block.eval()


def _train(m: nn.Module) -> nn.Module:
    return m.train()


class _FunctionalNet(nn.Module):
    """The classic functional net: an in-place ``F.relu``, ``F.max_pool2d``, ``F.dropout``, ``view``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv(x), inplace=True), 2)
        x = F.dropout(x, 0.5, training=self.training)
        return self.fc(x.view(x.size(0), -1))


class _Residual(nn.Module):
    """A residual connection ``+`` around a conv, batch norm and a depthwise conv; a functional ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = _bn_with_stats(nn.BatchNorm2d(4), 9)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(self.depthwise(self.bn(self.conv(x))) + x)


class _Dense(nn.Module):
    """DenseNet's pattern: each layer reads ``torch.cat`` of all earlier outputs; global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 2, 3, padding=1)
        self.second = nn.Conv2d(5, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        features.append(F.relu(self.first(torch.cat(features, 1))))
        features.append(self.second(torch.cat(features, 1)))
        return F.adaptive_avg_pool2d(torch.cat(features, dim=1), 1).flatten(1)


class _ShapeOps(nn.Module):
    """Scaling by constants, functional pools and activations, reshaping, indexing and means."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("scale", torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = F.hardswish(torch.mul(self.conv(x), self.scale) * 0.5)  # (N, 4, 8, 8)
        a = F.leaky_relu(F.avg_pool2d(x, 2), 0.2)
        b = F.silu(F.max_pool2d(x, kernel_size=3, stride=2, padding=1))
        c = F.adaptive_max_pool2d(x.relu(), 4)
        y = torch.cat((a, b, c), 1).permute(0, 2, 3, 1).contiguous().transpose(1, 2)  # (N, 4, 4, 12)
        y = torch.unsqueeze(y[:, 1:, :, ::2], 1).squeeze(1)  # (N, 3, 4, 6)
        y = torch.relu(y.reshape(y.shape[0], -1)).view(-1, 3, 24)
        return torch.flatten(torch.mean(y, dim=2, keepdim=True), 1) + y.mean(-1)


# name -> (module factory, input shape without the batch dimension)
def _with_random_affine(norm: nn.LayerNorm) -> nn.LayerNorm:
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(norm.weight.shape, generator=g) * 0.3)
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=g) * 0.3)
    return norm


class _SelfAttention(nn.Module):
    """torchvision's EncoderBlock call: ``nn.MultiheadAttention(x, x, x, need_weights=False)``."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        nn.init.normal_(self.attention.in_proj_bias, std=0.3)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.attention(x, x, x, need_weights=False)
        return y


class _ScaledDotProduct(nn.Module):
    """timm's fused path: a qkv projection, heads, ``F.scaled_dot_product_attention``, a layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.scale = nn.Parameter(torch.full((8,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.scale * y.transpose(1, 2).reshape(x.shape[0], x.shape[1], 8) + x


class _Tokens(nn.Module):
    """ViT's constants: a class token concatenated in front, position embeddings added."""

    def __init__(self) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.randn(1, 1, 8))
        self.position = nn.Parameter(torch.randn(1, 6, 8))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position


LAYER_CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (3, 10)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), (3, 8, 8)),
    "conv2d-nobias-strided": (lambda: nn.Conv2d(3, 4, 3, stride=2, bias=False), (3, 9, 9)),
    "conv2d-groups-dilated": (lambda: nn.Conv2d(4, 6, 3, groups=2, dilation=2, padding=2), (4, 8, 8)),
    "conv2d-reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (3, 8, 8)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, padding=1), (2, 5, 5, 5)),
    "linear": (lambda: nn.Linear(6, 4), (6,)),
    "linear-nobias": (lambda: nn.Linear(6, 4, bias=False), (6,)),
    "conv2d-depthwise": (lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1), (4, 8, 8)),
    "relu": (lambda: nn.ReLU(inplace=True), (3, 6, 6)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (3, 6, 6)),
    "relu6": (lambda: nn.ReLU6(inplace=True), (3, 6, 6)),
    "hardswish": (lambda: nn.Hardswish(), (3, 6, 6)),
    "silu": (lambda: nn.SiLU(inplace=True), (3, 6, 6)),
    "gelu": (lambda: nn.GELU(), (3, 6, 6)),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), (3, 6, 6)),
    "layer_norm": (lambda: _with_random_affine(nn.LayerNorm(6)), (3, 6, 6)),
    "layer_norm_2d": (lambda: _with_random_affine(LayerNorm2d(3)), (3, 6, 6)),
    "self_attention": (lambda: _SelfAttention(), (5, 8)),
    "scaled_dot_product_attention": (lambda: _ScaledDotProduct(), (5, 8)),
    "position_embedding_and_class_token": (lambda: _Tokens(), (5, 8)),
    "batchnorm1d-eval": (lambda: _bn_with_stats(nn.BatchNorm1d(6), 1), (6,)),
    "batchnorm2d-eval": (lambda: _bn_with_stats(nn.BatchNorm2d(3), 2), (3, 6, 6)),
    "batchnorm3d-eval": (lambda: _bn_with_stats(nn.BatchNorm3d(2), 3), (2, 4, 4, 4)),
    "batchnorm2d-train": (lambda: _train(_bn_with_stats(nn.BatchNorm2d(3), 4)), (3, 6, 6)),
    "maxpool1d": (lambda: nn.MaxPool1d(2), (3, 10)),
    "maxpool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (3, 9, 9)),
    "maxpool2d-ceil": (lambda: nn.MaxPool2d(2, ceil_mode=True), (3, 7, 7)),
    "maxpool3d": (lambda: nn.MaxPool3d(2), (2, 4, 4, 4)),
    "adaptive_maxpool2d": (lambda: nn.AdaptiveMaxPool2d(3), (3, 7, 7)),
    "avgpool1d": (lambda: nn.AvgPool1d(2), (3, 10)),
    "avgpool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (3, 8, 8)),
    "avgpool3d": (lambda: nn.AvgPool3d(2), (2, 4, 4, 4)),
    "adaptive_avgpool2d": (lambda: nn.AdaptiveAvgPool2d(1), (3, 7, 7)),
    "flatten": (lambda: nn.Flatten(), (3, 4, 4)),
    "unflatten": (lambda: nn.Unflatten(1, (3, 4)), (12,)),
    "identity": (lambda: nn.Identity(), (3, 4, 4)),
    "dropout-eval": (lambda: nn.Dropout(0.5).eval(), (3, 4, 4)),
    "dropout2d-eval": (lambda: nn.Dropout2d(0.5).eval(), (3, 4, 4)),
    "stochastic_depth-eval": (lambda: StochasticDepth(0.5, "row").eval(), (3, 4, 4)),
    "sequential": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            _bn_with_stats(nn.BatchNorm2d(4), 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3).eval(),
            nn.Linear(4, 3),
        ),
        (3, 8, 8),
    ),
    "basic_block": (lambda: _block_with_stats(BasicBlock(4, 4), 6), (4, 6, 6)),
    "basic_block-downsample": (
        lambda: _block_with_stats(
            BasicBlock(
                4, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
            ),
            7,
        ),
        (4, 8, 8),
    ),
    "bottleneck-downsample": (
        lambda: _block_with_stats(
            Bottleneck(4, 2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8))), 8
        ),
        (4, 6, 6),
    ),
    "functional": (lambda: _FunctionalNet().eval(), (3, 8, 8)),
    "residual": (lambda: _Residual().eval(), (4, 6, 6)),
    "dense": (lambda: _Dense(), (3, 6, 6)),
    "shape-ops": (lambda: _ShapeOps(), (3, 8, 8)),
    "squeeze-excitation": (lambda: SqueezeExcitation(4, 2), (4, 6, 6)),
    "squeeze-excitation-hard": (
        lambda: SqueezeExcitation(4, 2, activation=nn.SiLU, scale_activation=nn.Hardsigmoid),
        (4, 6, 6),
    ),
}


def _inputs(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=DT) * 1.5 + 0.2


def _random_mask(shape: tuple[int, ...], seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) > 0.5


def test_every_builtin_rule_is_covered() -> None:
    built = {type(factory()) for factory, _ in LAYER_CASES.values()}
    built |= {nn.Dropout1d, nn.Dropout3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool3d}  # same rules as their 2-D kin
    built |= {nn.LayerNorm}  # LayerNorm2d is traced through: its F.layer_norm
    built |= {t for t in registered_types() if t.__module__.startswith("transformers.")}  # test_..._hugging_face_vit
    built |= {nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool3d, type(resnet18(weights=None, num_classes=3))}
    assert set(registered_types()) <= built


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_completeness_and_exact_edges(case: str) -> None:
    torch.manual_seed(0)
    factory, shape = LAYER_CASES[case]
    module = factory().to(DT)
    x = _inputs(shape)
    expected = module(x.clone())

    beta, gamma = contextual_decomposition(module, x, _random_mask(x.shape))
    assert beta.shape == gamma.shape == expected.shape
    torch.testing.assert_close(beta + gamma, expected, **TOL)
    assert not beta.requires_grad

    beta1, gamma1 = contextual_decomposition(module, x, torch.ones(x.shape, dtype=torch.bool))
    assert torch.count_nonzero(gamma1) == 0
    torch.testing.assert_close(beta1, expected, **TOL)

    beta0, gamma0 = contextual_decomposition(module, x, torch.zeros(x.shape, dtype=torch.bool))
    assert torch.count_nonzero(beta0) == 0  # exact: biases go to γ when the region's part is 0
    torch.testing.assert_close(gamma0, expected, **TOL)


class _FunctionalDropout(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, 0.5, self.training)


@pytest.mark.parametrize(
    "factory",
    [lambda: nn.Dropout(0.5), lambda: StochasticDepth(0.5, "row"), _FunctionalDropout],
    ids=["module", "stochastic_depth", "function"],
)
def test_dropout_in_training_mode_shares_one_mask(factory: Callable[[], nn.Module]) -> None:
    module = factory().train()
    x = _inputs((3, 6, 6))
    torch.manual_seed(123)
    expected = module(x)
    torch.manual_seed(123)
    beta, gamma = contextual_decomposition(module, x, _random_mask(x.shape))
    torch.testing.assert_close(beta + gamma, expected, **TOL)
    dropped = expected == 0
    assert dropped.any() and torch.count_nonzero(beta[dropped]) == 0 and torch.count_nonzero(gamma[dropped]) == 0


def _small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = resnet18(weights=None, num_classes=3).to(DT)
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial running statistics
        model(torch.randn(8, 3, 32, 32, generator=g, dtype=DT) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.add_(torch.randn(m.num_features, generator=g, dtype=DT) * 0.2)
                m.bias.add_(torch.randn(m.num_features, generator=g, dtype=DT) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def small_resnet() -> nn.Module:
    return _small_resnet()


def test_resnet18_completeness_for_every_mask_form(small_resnet: nn.Module) -> None:
    x = _inputs((3, 32, 32), n=4)
    masks = {
        "HW": _random_mask((32, 32)),
        "NHW": _random_mask((4, 32, 32)),
        "NCHW": _random_mask((4, 3, 32, 32)),
        "soft": torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(3), dtype=DT),
    }
    with torch.no_grad():
        logits = small_resnet(x)
    for kind, mask in masks.items():
        beta, gamma = contextual_decomposition(small_resnet, x, mask)
        assert beta.shape == gamma.shape == (4, 3), kind
        torch.testing.assert_close(beta + gamma, logits, **TOL, msg=lambda m, kind=kind: f"{kind}: {m}")


def test_resnet18_all_ones_and_all_zeros(small_resnet: nn.Module) -> None:
    x = _inputs((3, 32, 32), n=4)
    with torch.no_grad():
        logits = small_resnet(x)
    beta, gamma = contextual_decomposition(small_resnet, x, torch.ones(32, 32, dtype=torch.bool))
    assert torch.count_nonzero(gamma) == 0
    torch.testing.assert_close(beta, logits, **TOL)
    # ResNet has BN biases; they go to γ when β's part is exactly 0, so β stays exactly 0.
    beta, gamma = contextual_decomposition(small_resnet, x, torch.zeros(32, 32, dtype=torch.bool))
    assert torch.count_nonzero(beta) == 0
    torch.testing.assert_close(gamma, logits, **TOL)


def test_resnet18_float32_tolerance(small_resnet: nn.Module) -> None:
    model = copy.deepcopy(small_resnet).float()
    x = _inputs((3, 32, 32), n=2).float()
    with torch.no_grad():
        logits = model(x)
    beta, gamma = contextual_decomposition(model, x, _random_mask((2, 32, 32)))
    assert (beta + gamma - logits).abs().max() <= 1e-4 * logits.abs().max()


def test_batch_of_one_matches_batch_of_eight(small_resnet: nn.Module) -> None:
    x = _inputs((3, 32, 32), n=8)
    mask = _random_mask((8, 32, 32))
    beta, gamma = contextual_decomposition(small_resnet, x, mask)
    for i in (0, 5):
        b1, g1 = contextual_decomposition(small_resnet, x[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(b1[0], beta[i], **TOL)
        torch.testing.assert_close(g1[0], gamma[i], **TOL)


def test_region_importance_and_interaction_symmetry(small_resnet: nn.Module) -> None:
    x = _inputs((3, 32, 32), n=4)
    a = torch.zeros(32, 32, dtype=torch.bool)
    a[:16] = True
    b = torch.zeros(32, 32, dtype=torch.bool)
    b[8:24, 8:24] = True
    target = torch.tensor([0, 1, 2, 1])
    beta, _ = contextual_decomposition(small_resnet, x, a)
    imp = region_importance(small_resnet, x, a, target)
    assert imp.shape == (4,)
    torch.testing.assert_close(imp, beta[torch.arange(4), target], rtol=0, atol=0)
    torch.testing.assert_close(region_importance(small_resnet, x, a, 2), beta[:, 2], rtol=0, atol=0)
    ab = interaction(small_resnet, x, a, b, target)
    ba = interaction(small_resnet, x, b, a, target)
    assert ab.shape == (4,)
    torch.testing.assert_close(ab, ba, **TOL)


def test_interaction_vanishes_for_a_linear_model() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False)).to(DT)
    x = _inputs((3, 4, 4))
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    inter = interaction(model, x, a, ~a, 1)
    torch.testing.assert_close(inter, torch.zeros(8, dtype=DT), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["sequential", "residual", "dense", "squeeze-excitation"])
def test_differentiable_flag_keeps_the_graph(case: str) -> None:
    factory, shape = LAYER_CASES[case]
    model = factory().to(DT)
    x = _inputs(shape)
    mask = _random_mask(shape[1:])
    beta, _ = contextual_decomposition(model, x, mask)
    assert beta.grad_fn is None
    beta, gamma = contextual_decomposition(model, x, mask, differentiable=True)
    beta.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_inputs_device() -> None:
    model = LAYER_CASES["sequential"][0]().cuda()
    x = _inputs((3, 8, 8)).float().cuda()
    beta, gamma = contextual_decomposition(model, x, _random_mask((8, 8)))  # CPU mask is moved
    assert beta.device == x.device
    torch.testing.assert_close(beta + gamma, model(x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The torchvision zoo


ZOO = ["vgg11", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "resnet18", "resnet50"]


def _zoo_model(name: str) -> nn.Module:
    """Random init (seeded, nothing downloads), eval mode. torchvision initialises every batch-norm
    shift and most biases to 0; they are drawn here so that the bias-sharing rule is exercised."""
    torch.manual_seed(0)
    model = getattr(models, name)(weights=None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_architecture_decomposes(name: str) -> None:
    model = _zoo_model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    scale = logits.abs().max()
    centre = torch.zeros(224, 224, dtype=torch.bool)
    centre[56:168, 56:168] = True
    beta, gamma = contextual_decomposition(model, x, centre)
    assert (beta + gamma - logits).abs().max() <= 1e-3 * scale
    assert beta.abs().max() > 1e-3 * scale and gamma.abs().max() > 1e-3 * scale  # both parts carry something

    beta, gamma = contextual_decomposition(model, x, torch.ones(224, 224, dtype=torch.bool))
    assert torch.count_nonzero(gamma) == 0
    assert (beta - logits).abs().max() <= 1e-3 * scale


def _with_random_biases(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.LayerNorm) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=m.weight.shape[1] ** -0.5)  # torchvision's ViT head is zeros
    return model.eval()


TRANSFORMERS: dict[str, Callable[[], nn.Module]] = {
    "vit": lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32),
    "convnext": lambda: ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=3),
    # Two blocks per stage: the second shifts its windows; 28 px pads the 7x7 grid to windows of 3.
    "swin": lambda: SwinTransformer([4, 4], 16, [2, 2], [2, 2], [3, 3], num_classes=3),
}


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=3, **kwargs)

    return build


def _hugging_face_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32
    )
    config.num_labels = 3
    return transformers.ViTForImageClassification(config)


class _Logits(nn.Module):
    """The logits of a Hugging Face model (CD's rule returns them; this checks them against its forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).logits


TRANSFORMERS.update(
    {
        "timm_vit": _timm("vit_tiny_patch16_224"),
        "timm_deit_distilled": _timm("deit_tiny_distilled_patch16_224"),
        "timm_avg_pool_layer_scale": _timm(
            "vit_small_patch16_224", global_pool="avg", class_token=False, init_values=0.1
        ),
        "hugging_face_vit": _hugging_face_vit,
    }
)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_vision_transformer_and_convnext_decompose(name: str) -> None:
    """Class token, position embeddings, LayerNorm (and ConvNeXt's LayerNorm2d), softmax
    attention, GELU, layer scale, stochastic depth, Swin's padded, shifted windows and patch
    merging: β + γ are the logits, a mask of ones gives γ = 0 and a mask of zeros β = 0."""
    model = _with_random_biases(TRANSFORMERS[name]().to(DT), 5)
    size = 28 if name == "swin" else 32
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=DT)
    with torch.no_grad():
        logits = _Logits(model)(x) if name == "hugging_face_vit" else model(x)
    scale = logits.abs().max()
    beta, gamma = contextual_decomposition(model, x, _random_mask((size, size)))
    assert (beta + gamma - logits).abs().max() <= 1e-9 * scale
    assert beta.abs().max() > 1e-3 * scale and gamma.abs().max() > 1e-3 * scale
    beta1, gamma1 = contextual_decomposition(model, x, torch.ones(size, size, dtype=torch.bool))
    assert torch.count_nonzero(gamma1) == 0
    beta0, gamma0 = contextual_decomposition(model, x, torch.zeros(size, size, dtype=torch.bool))
    assert torch.count_nonzero(beta0) == 0


# --------------------------------------------------------------------------------------------
# Errors and the registry


def test_unsupported_layer_names_its_path() -> None:
    model = nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Tanh()),
            head=nn.Sequential(nn.Flatten(), nn.LazyLinear(3)),
        )
    )
    with pytest.raises(UnsupportedLayerError, match=r"layer 'features\.3' \(nn\.Tanh\)") as info:
        contextual_decomposition(model, _inputs((3, 8, 8)).float(), _random_mask((8, 8)))
    assert isinstance(info.value, TypeError)
    assert info.value.path == "features.3"
    assert info.value.module_type is nn.Tanh
    assert "supported: " in str(info.value) and "nn.Conv2d" in str(info.value)


class _CustomForward(nn.Module):
    """Children CD knows, glued together by a functional op it cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


class _MyConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * 2


class _MySequential(nn.Sequential):
    pass


def test_custom_forward_module_raises() -> None:
    x = _inputs((3, 8, 8)).float()
    with pytest.raises(UnsupportedLayerError, match=r"layer '<model>' \(.*_CustomForward\)"):
        contextual_decomposition(_CustomForward(), x, _random_mask((8, 8)))
    nested = nn.Sequential(nn.Identity(), _CustomForward())
    with pytest.raises(UnsupportedLayerError, match=r"layer '1'"):
        contextual_decomposition(nested, x, _random_mask((8, 8)))


def test_subclass_with_own_forward_raises_but_plain_subclass_works() -> None:
    x = _inputs((3, 8, 8))
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(.*_MyConv\)"):
        contextual_decomposition(nn.Sequential(_MyConv(3, 4, 3)).to(DT), x, _random_mask((8, 8)))
    model = _MySequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to(DT)
    beta, gamma = contextual_decomposition(model, x, _random_mask((8, 8)))
    torch.testing.assert_close(beta + gamma, model(x), **TOL)


class _Normalize(nn.Module):
    """A wrapper that normalises its input before an inner model (registered by the test)."""

    def __init__(self, inner: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner((x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1))


class _Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


def test_register_rule_for_a_custom_composite_and_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decomposition, "_RULES", dict(decomposition._RULES))

    def normalize_rule(module, beta, gamma, ctx):  # type: ignore[no-untyped-def]
        scale = 1 / module.std.view(1, -1, 1, 1)
        beta, gamma = propagate_affine(beta, gamma, scale, -module.mean.view(1, -1, 1, 1) * scale)
        return ctx.propagate(module.inner, beta, gamma, "inner")

    def swish_rule(module, beta, gamma, ctx):  # type: ignore[no-untyped-def]
        return decomposition.propagate_elementwise_activation(beta, gamma, F.silu)

    inner = nn.Sequential(nn.Conv2d(3, 4, 3), _Swish(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model = _Normalize(inner, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]).to(DT)
    x = _inputs((3, 8, 8))
    with pytest.raises(UnsupportedLayerError, match="'<model>'"):
        contextual_decomposition(model, x, _random_mask((8, 8)))
    register_rule(_Normalize, normalize_rule)
    with pytest.raises(UnsupportedLayerError, match=r"'inner\.1'"):
        contextual_decomposition(model, x, _random_mask((8, 8)))
    register_rule(_Swish, swish_rule)
    beta, gamma = contextual_decomposition(model, x, _random_mask((8, 8)))
    torch.testing.assert_close(beta + gamma, model(x), **TOL)
    assert _Swish in registered_types()


class _Tanh(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


class _Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


class _GatePlusInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gate(x)


class _PoolWithIndices(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2, return_indices=True)[0]


class _DataDependent(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x if x.sum() > 0 else -x


# name -> (the module behind a 1x1 conv at path "body", the error's path, module type, operation, words of its reason)
REFUSED: dict[str, tuple[nn.Module, str, type, str | None, str]] = {
    "tanh": (_Tanh(), "body", _Tanh, "torch.tanh", "no rule for torch.tanh in layer 'body'"),
    "product": (_Square(), "body", _Square, "operator.mul", "a product of two such tensors has no rule"),
    "gate added": (_GatePlusInput(), "body", _GatePlusInput, "operator.add", "which CD lets only multiply"),
    "gate as output": (nn.Sigmoid(), "body", nn.Sigmoid, None, "CD uses it only as a gate that multiplies features"),
    "untraceable": (_DataDependent(), "body", _DataDependent, None, "torch.fx cannot trace its forward: TraceError"),
    "pool indices": (
        _PoolWithIndices(),
        "body",
        _PoolWithIndices,
        "torch.nn.functional.max_pool2d_with_indices",
        "no rule for torch.nn.functional.max_pool2d_with_indices in layer 'body'",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_nodes_name_the_operation_and_the_module(case: str) -> None:
    body, path, module_type, operation, reason = REFUSED[case]
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 3, 1), body=body))
    with pytest.raises(UnsupportedLayerError) as info:
        contextual_decomposition(model, _inputs((3, 8, 8)).float(), _random_mask((8, 8)))
    assert (info.value.path, info.value.module_type, info.value.operation) == (path, module_type, operation)
    assert reason in str(info.value) and "\n" not in str(info.value)


class _ModeDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) if self.training else self.fc(F.relu(x))


def test_the_graph_is_traced_again_when_modes_or_modules_change() -> None:
    model = _ModeDependent().to(DT)
    x = _inputs((4,))
    mask = _random_mask(x.shape)
    for change in ("none", "eval", "new submodule"):
        if change == "eval":
            model.eval()
        elif change == "new submodule":  # a composite where a leaf was: the old graph would call it whole
            model.fc = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).to(DT).eval()
        beta, gamma = contextual_decomposition(model, x, mask)
        torch.testing.assert_close(beta + gamma, model(x), **TOL, msg=lambda m, change=change: f"after {change}: {m}")


def test_register_rule_rejects_non_modules() -> None:
    with pytest.raises(TypeError):
        register_rule(int, lambda *a: a)  # type: ignore[arg-type]


def test_mask_shape_is_checked() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).to(DT)
    with pytest.raises(ValueError, match="does not fit"):
        contextual_decomposition(model, _inputs((3, 8, 8)), torch.ones(5, 5, dtype=torch.bool))


# --------------------------------------------------------------------------------------------
# Property test


_PROPERTY_MODEL = LAYER_CASES["sequential"][0]().to(DT)
_PROPERTY_X = _inputs((3, 8, 8), n=4, seed=7)
with torch.no_grad():
    _PROPERTY_LOGITS = _PROPERTY_MODEL(_PROPERTY_X)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.0, 1.0),
    kind=st.sampled_from(["HW", "NHW", "NCHW", "soft"]),
)
def test_property_beta_plus_gamma_is_the_logits(seed: int, density: float, kind: str) -> None:
    g = torch.Generator().manual_seed(seed)
    shape = {"HW": (8, 8), "NHW": (4, 8, 8), "NCHW": (4, 3, 8, 8), "soft": (4, 8, 8)}[kind]
    u = torch.rand(shape, generator=g, dtype=DT)
    mask = u * density if kind == "soft" else u < density
    beta, gamma = contextual_decomposition(_PROPERTY_MODEL, _PROPERTY_X, mask)
    torch.testing.assert_close(beta + gamma, _PROPERTY_LOGITS, **TOL)
