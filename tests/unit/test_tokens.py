"""Token and channels-last layers as feature grids, ``layer: auto``, and layer methods on them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from examples.shapes.model import build as shapes_cnn
from examples.vit.models import build as tiny_vit
from pytest_saliency.attribution import Attributor
from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.metrics.drift.segments import activation_embeddings
from pytest_saliency.spec.schema import AttributionSpec
from pytest_saliency.tokens import GridLayout, LayoutError, infer_layout, output_shapes, pick_cam_layer

WHERE = ("attributions", "m")
SIZE = (32, 32)


@settings(max_examples=40, deadline=None)
@given(prefix=st.integers(0, 4), h=st.integers(1, 5), w=st.integers(1, 5), width=st.integers(1, 4))
def test_tokens_become_a_row_major_grid_and_back(prefix: int, h: int, w: int, width: int) -> None:
    tokens = torch.randn(2, prefix + h * w, width)
    layout = GridLayout(tokens=True, prefix=prefix, grid=(h, w))
    grid = layout.to_grid(tokens)
    assert grid.shape == (2, width, h, w)
    for i in range(h):
        for j in range(w):
            assert torch.equal(grid[:, :, i, j], tokens[:, prefix + i * w + j])
    assert torch.equal(layout.from_grid(grid, tokens), tokens)


def test_channels_last_maps_are_permuted_and_back() -> None:
    maps = torch.randn(2, 4, 5, 3)
    layout = GridLayout(channels_last=True)
    assert torch.equal(layout.to_grid(maps), maps.permute(0, 3, 1, 2))
    assert torch.equal(layout.from_grid(layout.to_grid(maps), maps), maps)


@pytest.mark.parametrize(
    ("shape", "size", "patch", "expected"),
    [
        ((2, 17, 32), (32, 32), 8, (1, (4, 4))),  # class token
        ((2, 18, 32), (32, 32), 8, (2, (4, 4))),  # class and distillation tokens
        ((2, 16, 32), (32, 32), 8, (0, (4, 4))),  # global pooling, no prefix token
        ((2, 21, 32), (32, 32), None, (5, (4, 4))),  # class + 4 registers, patch size unknown
        ((2, 33, 32), (32, 64), 8, (1, (4, 8))),  # a wide input
    ],
)
def test_the_token_grid_is_inferred(
    shape: tuple[int, ...], size: tuple[int, int], patch: int | None, expected: tuple[int, tuple[int, int]]
) -> None:
    layout = infer_layout(shape, size, patch, nn.Identity())
    assert layout.tokens and (layout.prefix, layout.grid) == expected


def test_reshape_overrides_the_inferred_grid() -> None:
    layout = infer_layout((2, 17, 8), SIZE, 8, nn.Identity(), grid=(2, 8))
    assert (layout.prefix, layout.grid) == (1, (2, 8))
    with pytest.raises(LayoutError, match=r"17 tokens are not reshape.grid \[5, 5\]"):
        infer_layout((2, 17, 8), SIZE, 8, nn.Identity(), grid=(5, 5))


def test_an_uninferable_token_count_names_the_shape_and_the_setting() -> None:
    with pytest.raises(LayoutError) as raised:
        infer_layout((2, 1000, 4), SIZE, None, nn.Identity())
    assert str(raised.value) == (
        "outputs (N, 1000, 4): cannot infer which of its 1000 tokens form a grid; "
        "set reshape: {prefix_tokens: <k>, grid: [<h>, <w>]}"
    )
    with pytest.raises(LayoutError, match=r"outputs \(N, 10\), neither tokens"):
        infer_layout((2, 10), SIZE, None, nn.Identity())


def test_channels_last_is_read_from_the_shape_or_the_layers_width() -> None:
    assert infer_layout((2, 4, 4, 48), SIZE, None, nn.Identity()).channels_last
    assert infer_layout((2, 48, 4, 4), SIZE, None, nn.Identity()).is_identity
    # Both readings fit a square 8x8x8 map: the LayerNorm's width decides.
    assert infer_layout((2, 8, 8, 16), SIZE, None, nn.LayerNorm(16)).channels_last
    assert infer_layout((2, 8, 8, 8), SIZE, None, nn.Conv2d(3, 8, 1)).is_identity
    assert infer_layout((2, 8, 8, 8), SIZE, None, nn.Identity(), channels_last=True).channels_last


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=3
    ).eval()


def tiny_swin_v2() -> SwinTransformer:
    """Patch 16 at 32 px: stage 1 is 2x2, stage 2 1x1, and each block's position-bias MLP
    outputs a (1, 3, 3, heads) table that is not computed per sample."""
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[16, 16],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=[2, 2],
        num_classes=3,
        block=SwinTransformerBlockV2,
        downsample_layer=PatchMergingV2,
    ).eval()


def tiny_convnext() -> ConvNeXt:
    torch.manual_seed(0)
    return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=3).eval()


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        (lambda: tiny_vit(seed=0), "encoder.layers.encoder_layer_1.ln_1"),  # the last block's first norm
        (tiny_swin, "norm"),  # the last stage, normed (channels-last)
        (tiny_swin_v2, "features.1"),  # the last stage larger than 1x1, not the position-bias MLP after it
        (tiny_convnext, "features"),  # the last stage
        (shapes_cnn, "6"),  # the last convolution
    ],
    ids=["vit", "swin", "swin_v2", "convnext", "cnn"],
)
def test_layer_auto_picks_the_usual_cam_layer(network: object, expected: str) -> None:
    model = network().eval()  # type: ignore[operator]
    images = torch.rand(1, 3, *SIZE)
    assert pick_cam_layer(model, output_shapes(model, images), SIZE) == expected


def test_layer_auto_on_timm_and_hugging_face_vits() -> None:
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    images = torch.rand(1, 3, *SIZE)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2).eval()
    assert pick_cam_layer(vit, output_shapes(vit, images), SIZE) == "blocks.1.norm1"
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64
    )
    hf = transformers.ViTForImageClassification(config).eval()
    names = [name for name, _ in hf.named_modules()]
    picked = pick_cam_layer(hf, output_shapes(hf, images), SIZE)
    assert picked.endswith("1.layernorm_before") and picked in names


def grad_cam_on_tokens(model: nn.Module, layer: nn.Module, images: Tensor, target: Tensor, prefix: int) -> Tensor:
    """Grad-CAM written out for a token layer: channel weights = the gradient averaged over the
    patch tokens; the map = the weighted sum of the patch tokens' activations, on the grid,
    bilinearly upsampled (no ReLU, as captum's default)."""
    kept: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: kept.append(output))
    try:
        scores = model(images).gather(1, target.view(-1, 1)).sum()
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(scores, kept[0])
    patches, gradient = kept[0][:, prefix:].detach(), gradient[:, prefix:]
    side = int(patches.shape[1] ** 0.5)
    cam = (patches * gradient.mean(dim=1, keepdim=True)).sum(dim=2).view(-1, 1, side, side)
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)


def test_layer_grad_cam_on_a_token_layer_is_grad_cam_on_its_grid() -> None:
    model = ModelUnderTest(tiny_vit(seed=0, head_init=True), None).eval()
    images = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2])
    attributor = Attributor(AttributionSpec(method="LayerGradCam", layer="auto"), model, 3, WHERE)
    maps = attributor(images, target, [0, 1, 2], 0)
    assert attributor.layer_name == "encoder.layers.encoder_layer_1.ln_1"
    assert attributor.layout == GridLayout(tokens=True, prefix=1, grid=(4, 4))
    layer = model.network.get_submodule(attributor.layer_name)
    expected = grad_cam_on_tokens(model, layer, images, target, prefix=1)
    assert maps.abs().sum() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    # The hook is gone after the call: the layer's output is tokens again.
    assert not layer._forward_hooks


@pytest.mark.parametrize("method", ["GuidedGradCam", "LayerGradientXActivation", "LayerIntegratedGradients"])
def test_every_layer_method_runs_on_a_token_layer(method: str) -> None:
    model = ModelUnderTest(tiny_vit(seed=0, head_init=True), None).eval()
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    spec = AttributionSpec(method=method, layer="encoder.layers.encoder_layer_0")
    maps = Attributor(spec, model, 2, WHERE)(images, torch.tensor([0, 1]), [0, 1], 0)
    assert maps.shape[0] == 2 and maps.shape[-2:] == SIZE and maps.abs().sum() > 0


def test_layer_grad_cam_on_a_channels_last_swin_stage() -> None:
    model = ModelUnderTest(tiny_swin(), None).eval()
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    attributor = Attributor(AttributionSpec(method="LayerGradCam", layer="features.1"), model, 2, WHERE)
    maps = attributor(images, torch.tensor([0, 1]), [0, 1], 0)
    assert attributor.layout.channels_last
    assert maps.shape == (2, 1, *SIZE) and maps.abs().sum() > 0


def test_an_uninferable_layer_is_one_line_at_layer() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(3, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, images: Tensor) -> Tensor:
            return self.head(self.embed(images.flatten(2).transpose(1, 2)[:, :1000]).mean(1))

    model = ModelUnderTest(Tokens(), None).eval()
    attributor = Attributor(AttributionSpec(method="LayerGradCam", layer="embed"), model, 1, WHERE)
    with pytest.raises(SpecRuntimeError) as raised:
        attributor(torch.rand(1, 3, *SIZE), torch.tensor([0]), [0], 0)
    assert raised.value.location == (*WHERE, "layer")
    assert "layer 'embed' outputs (N, 1000, 4): cannot infer" in str(raised.value)
    spec = AttributionSpec(method="LayerGradCam", layer="embed", reshape={"prefix_tokens": 0, "grid": [10, 100]})  # type: ignore[arg-type]
    maps = Attributor(spec, model, 1, WHERE)(torch.rand(1, 3, *SIZE), torch.tensor([0]), [0], 0)
    assert maps.shape == (1, 1, *SIZE)


def test_drift_embeddings_pool_a_token_layers_grid() -> None:
    model = tiny_vit(seed=0).eval()
    images = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    segments = torch.zeros(*SIZE, dtype=torch.long)
    segments[:, 16:] = 1  # left and right halves
    embeddings = activation_embeddings(
        model, images, "encoder.layers.encoder_layer_1", segments, torch.tensor([[0, 1], [1, 0]])
    )
    kept: list[Tensor] = []
    handle = model.encoder.layers.encoder_layer_1.register_forward_hook(lambda _m, _i, output: kept.append(output))
    with torch.no_grad():
        model(images)
    handle.remove()
    grid = kept[0][:, 1:].reshape(2, 4, 4, -1)
    left, right = grid[:, :, :2].mean(dim=(1, 2)), grid[:, :, 2:].mean(dim=(1, 2))
    torch.testing.assert_close(embeddings, torch.stack([left[0], right[0], right[1], left[1]]))


def test_the_note_names_the_picked_layer_and_guided_methods_on_gelu_networks() -> None:
    model = ModelUnderTest(tiny_vit(seed=0, head_init=True), None).eval()
    images = torch.rand(1, 3, *SIZE)
    guided = Attributor(AttributionSpec(method="GuidedGradCam", layer="auto"), model, 1, WHERE)
    assert "attributes to layer" not in guided.note  # nothing picked before the first call
    guided(images, torch.tensor([0]), [0], 0)
    assert guided.note == (
        "attributes to layer encoder.layers.encoder_layer_1.ln_1 (tokens: 1 prefix, grid 4x4); guided "
        "backpropagation guides ReLUs only and this network has none: this is Grad-CAM × gradient"
    )
    cnn = ModelUnderTest(shapes_cnn(), None).eval()
    assert Attributor(AttributionSpec(method="GuidedGradCam", layer="6"), cnn, 1, WHERE).note == ""
