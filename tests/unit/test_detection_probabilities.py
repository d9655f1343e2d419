"""torchvision's two-stage detectors with each detection's class-probability vector (D-RISE)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from pytest_saliency.metrics.detection_probabilities import PROBABILITIES_KEY, class_probabilities

detection = pytest.importorskip("torchvision.models.detection")


@pytest.fixture(scope="module")
def rcnn() -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=4, box_score_thresh=0.0, min_size=64, max_size=64
    )
    return model.eval()


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_boxes_labels_and_scores_are_the_unwrapped_models(rcnn: nn.Module, images: Tensor) -> None:
    with torch.inference_mode():
        plain = rcnn(list(images))
        with class_probabilities(rcnn):
            wrapped = rcnn(list(images))
    assert any(found["boxes"].shape[0] > 0 for found in plain)
    for mine, theirs in zip(wrapped, plain, strict=True):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(mine[key], theirs[key])
        assert PROBABILITIES_KEY not in theirs


def test_each_row_is_a_distribution_whose_entry_at_the_label_is_the_score(rcnn: nn.Module, images: Tensor) -> None:
    with torch.inference_mode(), class_probabilities(rcnn):
        output = rcnn(list(images))
    for found in output:
        probabilities = found[PROBABILITIES_KEY]
        assert probabilities.shape == (found["boxes"].shape[0], 4)
        torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(probabilities.shape[0]))
        at_label = probabilities.gather(1, found["labels"].view(-1, 1)).view(-1)
        assert torch.equal(at_label, found["scores"])


def test_postprocess_detections_is_restored(rcnn: nn.Module, images: Tensor) -> None:
    heads = rcnn.get_submodule("roi_heads")
    before = heads.postprocess_detections
    with class_probabilities(rcnn):
        assert heads.postprocess_detections != before
    assert "postprocess_detections" not in vars(heads)
    assert heads.postprocess_detections == before
    with pytest.raises(RuntimeError, match="boom"), class_probabilities(rcnn):
        raise RuntimeError("boom")
    assert "postprocess_detections" not in vars(heads)
    assert not heads._forward_hooks
    with torch.inference_mode():
        assert PROBABILITIES_KEY not in rcnn(list(images[:1]))[0]


def test_networks_without_roi_heads_are_left_alone() -> None:
    network = nn.Linear(2, 2)
    with class_probabilities(network):
        assert not network._forward_hooks
