"""Targets of detectors and segmenters: matching, region sums, their gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.targets import MatchedDetection, OwnColumn, RegionLogitSum, ScoreModel, box_iou


def test_box_iou_of_known_boxes() -> None:
    first = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    second = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    assert box_iou(first, second)[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])


boxes = st.tuples(*(st.floats(0, 20) for _ in range(4))).map(
    lambda v: [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]) + 0.5, max(v[1], v[3]) + 0.5]
)


@settings(max_examples=50, deadline=None)
@given(st.lists(boxes, min_size=1, max_size=4), st.lists(boxes, min_size=1, max_size=4))
def test_box_iou_is_symmetric_and_bounded(a: list[list[float]], b: list[list[float]]) -> None:
    first, second = torch.tensor(a), torch.tensor(b)
    iou = box_iou(first, second)
    assert torch.allclose(iou, box_iou(second, first).t())
    assert bool(((iou >= 0) & (iou <= 1 + 1e-6)).all())


def detections(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict[str, Tensor]:
    return {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "scores": torch.tensor(scores)}


def test_matching_takes_the_highest_score_of_the_same_class_above_the_iou() -> None:
    objects = MatchedDetection(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([1]), torch.tensor([0]))
    found = detections(
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 4]],
        [2, 1, 1, 1],  # another class scores highest; the thin box barely overlaps
        [0.99, 0.6, 0.7, 0.95],
    )
    assert objects.scores([found]).tolist() == [[pytest.approx(0.7)]]
    strict = MatchedDetection(objects.boxes, objects.labels, objects.images, match_iou=0.9)
    assert strict.scores([found]).tolist() == [[pytest.approx(0.6)]]  # IoU 0.81 no longer matches


def test_an_object_without_a_match_scores_zero_and_a_bad_output_is_one_line() -> None:
    objects = MatchedDetection(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0]), torch.tensor([0]))
    empty = detections([], [], [])
    empty["boxes"] = empty["boxes"].view(0, 4)
    assert objects.scores([empty, detections([[20, 20, 30, 30]], [0], [0.9])]).tolist() == [[0.0], [0.0]]
    with pytest.raises(SpecRuntimeError, match="one dict per image with boxes, labels, scores"):
        objects.scores(torch.zeros(1, 3))


def test_region_logit_sum_and_its_bounded_score() -> None:
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    regions = torch.zeros(2, 4, 4, dtype=torch.bool)
    regions[0, :2, :2] = True
    regions[1, 1:, 3] = True
    target = RegionLogitSum(torch.tensor([2, 0]), regions)
    scores = target.scores(logits)
    assert scores.shape == (2, 2)
    for row in range(2):
        for sample, label in enumerate((2, 0)):
            assert scores[row, sample].item() == pytest.approx(
                logits[row, label][regions[sample]].sum().item(), abs=1e-5
            )
    probabilities = logits.softmax(dim=1)
    expected = probabilities[1, 0][regions[1]].mean().item()
    assert target.bounded(logits)[1, 1].item() == pytest.approx(expected, abs=1e-6)
    assert bool(((target.bounded(logits) >= 0) & (target.bounded(logits) <= 1)).all())


def test_lower_resolution_logits_are_upsampled_to_the_image() -> None:
    logits = torch.randn(1, 2, 2, 2)
    regions = torch.ones(1, 4, 4, dtype=torch.bool)
    upsampled = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    assert RegionLogitSum(torch.tensor([1]), regions).scores(logits).item() == pytest.approx(
        upsampled[0, 1].sum().item(), abs=1e-5
    )
    with pytest.raises(SpecRuntimeError, match="logits \\(N, classes, H, W\\)"):
        RegionLogitSum(torch.tensor([1]), regions).scores(torch.zeros(1, 2))


class Segmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.conv(x)}


def test_the_score_models_gradient_is_the_region_sums() -> None:
    torch.manual_seed(0)
    network = Segmenter().eval()
    model = ModelUnderTest(network, None, "out")
    images = torch.rand(2, 3, 6, 6)
    regions = torch.rand(2, 6, 6) > 0.5
    classes = torch.tensor([1, 0])
    scored = ScoreModel(model, RegionLogitSum(classes, regions))
    own = OwnColumn(scored, torch.arange(2))
    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(own(inputs).sum(), inputs)
    for i in range(2):
        one = images[i : i + 1].clone().requires_grad_(True)
        region_sum = (network(one)["out"][0, classes[i]] * regions[i]).sum()
        (expected,) = torch.autograd.grad(region_sum, one)
        assert torch.allclose(gradient[i], expected[0], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(boxes, st.integers(0, 2), st.floats(0.01, 1.0)), min_size=1, max_size=6),
    st.lists(st.tuples(boxes, st.integers(0, 2)), min_size=1, max_size=3),
    st.randoms(use_true_random=False),
)
def test_a_matched_score_is_the_best_match_whatever_the_detections_order(
    found: list[tuple[list[float], int, float]], objects: list[tuple[list[float], int]], rng: object
) -> None:
    target = MatchedDetection(
        torch.tensor([box for box, _ in objects]),
        torch.tensor([label for _, label in objects]),
        torch.zeros(len(objects)),
    )
    order = list(range(len(found)))
    rng.shuffle(order)  # type: ignore[attr-defined]
    shuffled = [found[i] for i in order]
    first = target.scores([detections(*map(list, zip(*found, strict=True)))])
    second = target.scores([detections(*map(list, zip(*shuffled, strict=True)))])
    assert torch.equal(first, second)
    for s, (box, label) in enumerate(objects):
        expected = max(
            (
                score
                for b, c, score in found
                if c == label and box_iou(torch.tensor([b]), torch.tensor([box])).item() >= 0.5
            ),
            default=0.0,
        )
        assert first[0, s].item() == pytest.approx(expected)
