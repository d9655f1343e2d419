"""Vision transformers through a spec: Grad-CAM at ``layer: auto`` on a token layer, attention
rollout and attention relevance by name; the layer picked named in the item's details; Swin's
windowed attention and an unreadable layer as one line at their spec key; a ViT's region check
by contextual decomposition."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

WriteSpec = Callable[..., Path]

TRANSFORMERS = """\
import torch
from torchvision.models import VisionTransformer
from torchvision.models.swin_transformer import SwinTransformer


def vit():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3)
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision's zero head has zero gradients
    return model


def swin():
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=3)
"""

ATTRIBUTIONS = """\
cam: {method: LayerGradCam, layer: auto}
rollout: {method: attention_rollout, params: {head_fusion: max, discard_ratio: 0.5}}
relevance: {method: attention_relevance}
"""
CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.99"}
"""


@pytest.fixture
def transformers(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(transformers_zoo=TRANSFORMERS)
    return project


def test_a_vit_runs_grad_cam_at_layer_auto_rollout_and_relevance(
    transformers: pytest.Pytester, write_spec: WriteSpec, helpers: object
) -> None:
    write_spec(model="factory: transformers_zoo:vit", attributions=ATTRIBUTIONS, checks=CHECKS)
    result = transformers.runpytest_inprocess()
    output = result.stdout.str()
    helpers.assert_no_traceback(output)  # type: ignore[attr-defined]
    result.assert_outcomes(failed=3)  # measured (an untrained ViT), not broken: each has its IoU
    for method in ("cam", "rollout", "relevance"):
        assert f"check 'cov' [{method}] failed: iou.mean = " in output
    assert "cam: attributes to layer encoder.layers.encoder_layer_1.ln_1 (tokens: 1 prefix, grid 4x4)" in output


def test_swin_rollout_and_an_unreadable_layer_are_one_line_at_their_key(
    transformers: pytest.Pytester, write_spec: WriteSpec, helpers: object
) -> None:
    attributions = "rollout: {method: attention_rollout}\nwide: {method: LayerGradCam, layer: head, reshape: {channels_last: true}}\n"
    path = write_spec(model="factory: transformers_zoo:swin", attributions=attributions, checks=CHECKS)
    output = transformers.runpytest_inprocess().stdout.str()
    helpers.assert_no_traceback(output)  # type: ignore[attr-defined]
    text = path.read_text()
    rollout = helpers.position(text, "attention_rollout")  # type: ignore[attr-defined]
    assert (
        f"specs/x.saliency.yaml:{rollout}: attributions.rollout.method: attention_rollout: the model "
        "ShiftedWindowAttention attends within windows" in output
    )
    layer = helpers.position(text, "head, reshape")  # type: ignore[attr-defined]
    assert (
        f"specs/x.saliency.yaml:{layer}: attributions.wide.layer: layer 'head' outputs (N, 3), "
        "neither tokens (N, T, D) nor a feature map (N, D, h, w)" in output
    )


def test_a_vits_region_check_decomposes_it(
    transformers: pytest.Pytester, write_spec: WriteSpec, helpers: object
) -> None:
    region = '- id: decoy-share\n  region:\n    mask: decoy\n    share: {mean: "<= 1"}\n'
    write_spec(model="factory: transformers_zoo:vit", checks=region)
    result = transformers.runpytest_inprocess()
    helpers.assert_no_traceback(result.stdout.str())  # type: ignore[attr-defined]
    result.assert_outcomes(passed=1)
