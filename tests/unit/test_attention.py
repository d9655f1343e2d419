"""Attention rollout and attention relevance against implementations written out here: the
attention probabilities from each library's own outputs or the test's own forward pass, the
formulas in plain loops over samples and blocks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.shapes.model import build as shapes_cnn
from examples.vit.models import build as tiny_vit
from pytest_saliency.attention.maps import attention_map
from pytest_saliency.attribution import Attributor
from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.spec.schema import AttributionSpec

SIZE = 32
WHERE = ("attributions", "m")
TARGET = torch.tensor([0, 2, 1])

# --- the formulas, written out --------------------------------------------------------------


def rollout_loops(attentions: list[Tensor], fusion: str = "mean", discard: float = 0.0) -> Tensor:
    """Abnar & Zuidema's rollout, one sample and one block at a time."""
    results = []
    for n in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        result = torch.eye(tokens)
        for attention in attentions:
            heads = attention[n]
            fused = {"mean": heads.mean(0), "max": heads.max(0).values, "min": heads.min(0).values}[fusion]
            flat = fused.flatten().clone()
            for position in flat.argsort()[: int(flat.numel() * discard)].tolist():
                if position != 0:
                    flat[position] = 0.0
            step = flat.view(tokens, tokens) + torch.eye(tokens)
            step = step / 2
            for row in range(tokens):
                step[row] = step[row] / step[row].sum()
            result = step @ result
        results.append(result)
    return torch.stack(results)


def relevance_loops(attentions: list[Tensor], gradients: list[Tensor]) -> Tensor:
    """Chefer, Gur & Wolf (2021): R ← R + mean_h((∇A ⊙ A)⁺) R from R = I; returns R − I."""
    results = []
    for n in range(attentions[0].shape[0]):
        tokens = attentions[0].shape[-1]
        result = torch.eye(tokens)
        for attention, gradient in zip(attentions, gradients, strict=True):
            weighted = (gradient[n] * attention[n]).clamp(min=0).mean(0)
            result = result + weighted @ result
        results.append(result - torch.eye(tokens))
    return torch.stack(results)


def read(relations: Tensor, rows: list[int], prefix: int) -> Tensor:
    """The mean of ``rows`` (all patch rows if empty) over the patch columns, as an (N, 1, h, w) grid."""
    chosen = relations[:, rows] if rows else relations[:, prefix:]
    patches = chosen.mean(1)[:, prefix:]
    side = int(patches.shape[1] ** 0.5)
    return patches.view(-1, 1, side, side)


# --- attention probabilities, each library's own way ------------------------------------------

Probabilities = Callable[[Tensor, Tensor], tuple[list[Tensor], list[Tensor]]]


def torchvision_vit() -> tuple[nn.Module, nn.Module, Probabilities]:
    """torchvision's ViT and a forward pass written out here, whose attention probabilities are
    computed with ``need_weights=True``-style explicit softmax, kept with their gradients."""
    network = tiny_vit(seed=0, head_init=True).eval()

    def probabilities(images: Tensor, target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        x = network._process_input(images)
        x = torch.cat([network.class_token.expand(x.shape[0], -1, -1), x], dim=1) + network.encoder.pos_embedding
        kept = []
        for block in network.encoder.layers:
            y = block.ln_1(x)
            mha = block.self_attention
            q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
            heads, width = mha.num_heads, y.shape[-1] // mha.num_heads
            q, k, v = (t.view(t.shape[0], t.shape[1], heads, width).transpose(1, 2) for t in (q, k, v))
            attention = torch.softmax(q @ k.transpose(-2, -1) / width**0.5, dim=-1)
            attention.retain_grad()
            kept.append(attention)
            mixed = (attention @ v).transpose(1, 2).reshape(y.shape)
            x = x + mha.out_proj(mixed)
            x = x + block.mlp(block.ln_2(x))
        logits = network.heads(network.encoder.ln(x)[:, 0])
        torch.testing.assert_close(logits, network(images))  # the forward written out is the model's
        logits.gather(1, target.view(-1, 1)).sum().backward()
        return [a.detach() for a in kept], [a.grad for a in kept]  # type: ignore[misc]

    return network, network, probabilities


def timm_vit(name: str = "vit_tiny_patch16_224", **kwargs: object) -> tuple[nn.Module, nn.Module, Probabilities]:
    """timm's ViT; its explicit attention path, read by the test's own hooks on ``attn_drop``."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    network = timm.create_model(name, pretrained=False, img_size=SIZE, patch_size=8, depth=2, num_classes=3, **kwargs)
    network.eval()

    def probabilities(images: Tensor, target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        kept: list[Tensor] = []
        handles = []
        for block in network.blocks:
            block.attn.fused_attn = False
            handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: kept.append(out)))
        logits = network(images)
        for attention in kept:
            attention.retain_grad()
        logits.gather(1, target.view(-1, 1)).sum().backward()
        for block, handle in zip(network.blocks, handles, strict=True):
            handle.remove()
            block.attn.fused_attn = True
        return [a.detach() for a in kept], [a.grad for a in kept]  # type: ignore[misc]

    return network, network, probabilities


def hugging_face_vit() -> tuple[nn.Module, nn.Module, Probabilities]:
    """Hugging Face's ViT; its own ``output_attentions=True`` outputs (eager attention)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=SIZE, patch_size=8, num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64
    )
    config.num_labels = 3
    network = transformers.ViTForImageClassification(config).eval()

    def probabilities(images: Tensor, target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        implementation = network.config._attn_implementation
        network.config._attn_implementation = "eager"
        output = network(pixel_values=images, output_attentions=True)
        network.config._attn_implementation = implementation
        for attention in output.attentions:
            attention.retain_grad()
        output.logits.gather(1, target.view(-1, 1)).sum().backward()
        return [a.detach() for a in output.attentions], [a.grad for a in output.attentions]

    return network, ModelUnderTest(network, None, output="logits"), probabilities


LIBRARIES = {"torchvision": torchvision_vit, "timm": timm_vit, "huggingface": hugging_face_vit}


def images(count: int = 3) -> Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.5), ("min", 0.9)])
def test_rollout_equals_the_loops_on_each_librarys_attention(library: str, fusion: str, discard: float) -> None:
    network, model, probabilities = LIBRARIES[library]()
    attentions, _ = probabilities(images(), TARGET)
    expected = read(rollout_loops(attentions, fusion, discard), [0], prefix=1)
    maps = attention_map(
        model,
        network,
        images(),
        TARGET,
        gradient_weighted=False,
        head_fusion=fusion,
        discard_ratio=discard,  # type: ignore[arg-type]
    )
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("library", LIBRARIES)
def test_relevance_equals_the_loops_on_each_librarys_attention(library: str) -> None:
    network, model, probabilities = LIBRARIES[library]()
    attentions, gradients = probabilities(images(), TARGET)
    expected = read(relevance_loops(attentions, gradients), [0], prefix=1)
    maps = attention_map(model, network, images(), TARGET, gradient_weighted=True)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-7)


def test_a_distilled_deit_reads_the_class_and_distillation_rows() -> None:
    network, model, probabilities = timm_vit("deit_tiny_distilled_patch16_224")
    attentions, gradients = probabilities(images(), TARGET)
    maps = attention_map(model, network, images(), TARGET, gradient_weighted=True)
    torch.testing.assert_close(maps, read(relevance_loops(attentions, gradients), [0, 1], prefix=2))


def test_a_globally_pooled_vit_reads_the_mean_of_the_patch_rows() -> None:
    network, model, probabilities = timm_vit(global_pool="avg", class_token=False)
    attentions, _ = probabilities(images(), TARGET)
    maps = attention_map(model, network, images(), TARGET, gradient_weighted=False)
    torch.testing.assert_close(maps, read(rollout_loops(attentions), [], prefix=0))


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_library_is_restored_after_an_attention_map(library: str) -> None:
    network, model, _ = LIBRARIES[library]()
    before = model(images())
    fused = [m.fused_attn for m in network.modules() if hasattr(m, "fused_attn")]
    implementation = getattr(getattr(network, "config", None), "_attn_implementation", None)
    attention_map(model, network, images(), TARGET, gradient_weighted=True)
    assert [m.fused_attn for m in network.modules() if hasattr(m, "fused_attn")] == fused
    assert getattr(getattr(network, "config", None), "_attn_implementation", None) == implementation
    assert not any("forward" in vars(m) for m in network.modules())
    assert not any(m._forward_hooks for m in network.modules())
    torch.testing.assert_close(model(images()), before)


@pytest.mark.parametrize("method", ["attention_rollout", "attention_relevance"])
def test_a_batch_gives_each_samples_own_map_upsampled(method: str) -> None:
    model = ModelUnderTest(tiny_vit(seed=0, head_init=True), None).eval()
    attributor = Attributor(AttributionSpec(method=method), model, 3, WHERE)
    together = attributor(images(), TARGET, [0, 1, 2], 0)
    alone = torch.cat([attributor(images()[i : i + 1], TARGET[i : i + 1], [i], 0) for i in range(3)])
    assert together.shape == (3, 1, SIZE, SIZE)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-7)
    grid = attention_map(model, model.network, images(), TARGET, gradient_weighted=method == "attention_relevance")
    torch.testing.assert_close(together, F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear"))


def hugging_face_swins() -> list[tuple[nn.Module, str]]:
    """Hugging Face's Swin and Swin V2 (tiny, random) and the class names of their windowed attention."""
    transformers = pytest.importorskip("transformers")
    sizes = {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "window_size": 2,
    }
    return [
        (transformers.SwinForImageClassification(transformers.SwinConfig(**sizes)), "SwinAttention"),
        (transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**sizes)), "Swinv2Attention"),
    ]


def test_swin_and_networks_without_attention_are_one_line() -> None:
    from torchvision.models.swin_transformer import SwinTransformer

    swin = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=3
    )
    windowed = "attends within windows, so there is no attention between all tokens to roll out: use LayerGradCam with layer: auto"
    swins = [(network, f"attention_rollout: the model {name} {windowed}") for network, name in hugging_face_swins()]
    for network, message in [
        (swin, f"attention_rollout: the model ShiftedWindowAttention {windowed}"),
        *swins,
        (shapes_cnn(), "attention_rollout: the model has no self-attention this method can read "
         "(torchvision, timm or Hugging Face ViT and DeiT)"),
    ]:  # fmt: skip
        attributor = Attributor(AttributionSpec(method="attention_rollout"), ModelUnderTest(network, None), 1, WHERE)
        with pytest.raises(SpecRuntimeError) as raised:
            attributor(images(1), TARGET[:1], [0], 0)
        assert raised.value.location == (*WHERE, "method")
        assert raised.value.message == message


def test_rollout_options_are_checked_by_the_schema() -> None:
    with pytest.raises(ValueError, match="params.head_fusion: Input should be 'mean', 'max' or 'min'"):
        AttributionSpec(method="attention_rollout", params={"head_fusion": "median"})
    with pytest.raises(ValueError, match="takes no params"):
        AttributionSpec(method="attention_relevance", params={"head_fusion": "max"})
