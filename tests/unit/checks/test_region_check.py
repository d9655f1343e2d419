"""The ``region`` check on tiny models whose contextual decomposition is known by hand.

The two-class models have antisymmetric heads (logit 1 = −logit 0), so their logits are already
centred over the classes and CD's parts are the hand-computed ones. Linear models without bias
decompose exactly: ``β_t = Σ_{p∈R} w_{t,p} u_p`` and ``γ_t = Σ_{p∉R} w_{t,p} u_p``, so
``share = |β_t| / (|β_t| + |γ_t|)`` is a ratio of integers. A one-hidden-unit ReLU model gives a
known non-zero interaction.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from pytest_saliency.checks.region import KIND, decide
from pytest_saliency.checks.request import CheckRequest
from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.metrics.region import cd_region_scores, centre, occlusion_scores, relative_share
from pytest_saliency.spec.schema import CheckSpec, NormalizeSpec
from pytest_saliency.streaming import Need, PassResult, Plan, Shard, ShardResult, merge, shard_ranges

SIZE = 4
REGION = (slice(0, 2), slice(0, 2))  # the top-left 2x2 corner: 4 of 16 pixels


def corner() -> Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[REGION] = True
    return mask


def linear_model(bias: float | None = None) -> nn.Module:
    """Logit 0 sums every pixel, logit 1 is its negative; ``bias`` is added to both (a shift
    common to the classes, which centring removes)."""
    layer = nn.Linear(SIZE * SIZE, 2, bias=bias is not None)
    with torch.no_grad():
        layer.weight[0].fill_(1.0)
        layer.weight[1].fill_(-1.0)
        if bias is not None:
            layer.bias.fill_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


class FakeEngine:
    """What a region check reads from a worker and an engine, built from tensors: the samples are
    split into real :class:`~pytest_saliency.streaming.Shard` s of ``shard_size``, each shard's
    statistics merged as the engine merges them (:func:`~pytest_saliency.streaming.merge`)."""

    def __init__(
        self,
        network: nn.Module,
        images: Tensor,
        regions: dict[str, Tensor],
        *,
        labels: Tensor | None = None,
        masks: Tensor | None = None,
        normalize: NormalizeSpec | None = None,
        batch_size: int = 2,
        shard_size: int | None = None,
        classes: tuple[str, ...] | None = ("a", "b"),
    ) -> None:
        n = images.shape[0]
        self.images = images
        self.labels = torch.zeros(n, dtype=torch.long) if labels is None else labels
        self.masks = torch.ones(n, *images.shape[2:], dtype=torch.bool) if masks is None else masks
        self.regions = regions
        self.model = ModelUnderTest(network, normalize).eval()
        self.spec = SimpleNamespace(
            checks=[], seed=0, target="label", task="classification", data=SimpleNamespace(classes=classes)
        )
        self.device = torch.device("cpu")
        self.batch_size = batch_size
        self.shard_size = shard_size or n

    def shards(self) -> list[Shard]:
        shards = []
        for part in shard_ranges(self.images.shape[0], self.shard_size):
            at = slice(part.start, part.stop)
            batch = SampleBatch(
                torch.arange(part.start, part.stop),
                self.images[at],
                self.masks[at],
                self.labels[at],
                {name: mask[at] for name, mask in self.regions.items()},
            )
            shards.append(Shard(self, batch))  # type: ignore[arg-type]
        return shards

    def result(self, check: CheckSpec) -> PassResult:
        """The merged statistics of ``check`` over every shard."""
        need = Need(self.spec.checks.index(check), None)
        parts = []
        for shard in self.shards():
            base = {"index": shard.indices, "label": shard.batch.labels, "prediction": shard.predictions}
            base["target"] = shard.targets
            parts.append(ShardResult(base, {}, {need: KIND.shard_statistics(shard, check, None)}, {}, [], 2))
        return merge(parts, Plan((need,)))


def run_check(engine: FakeEngine, **region: Any) -> Any:
    check = CheckSpec.model_validate({"id": "decoy-unused", "region": region})
    engine.spec.checks = [check]
    return decide_check(engine, check)


def decide_check(engine: FakeEngine, check: CheckSpec) -> Any:
    return decide(CheckRequest(engine, check, KIND.config_of(check), None, None, engine.result(check)))  # type: ignore[arg-type]


# --- share -----------------------------------------------------------------------------------


def test_relative_share_is_signed_and_undefined_at_zero() -> None:
    values = relative_share(torch.tensor([1.0, -1.0, 0.0, 0.0, 3.0]), torch.tensor([3.0, 3.0, 2.0, 0.0, 0.0]))
    assert values[[0, 1, 2, 4]].tolist() == [0.25, -0.25, 0.0, 1.0]
    assert math.isnan(values[3])


def test_centre_removes_the_shift_common_to_the_classes() -> None:
    logits = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(centre(logits), torch.tensor([[-2.0, -1.0, 3.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(centre(logits + 100), centre(logits))
    assert torch.equal(centre(torch.tensor([[5.0]])), torch.tensor([[5.0]]))  # one logit: unchanged


@pytest.mark.parametrize("bias", [None, 16.0, -40.0])
def test_cd_share_of_a_linear_model_is_known(bias: float | None) -> None:
    """Class 0: β = 4, γ = 12 -> 0.25; class 1: β = -4, γ = -12 -> 0.25, signed -0.25. A bias
    common to both classes is split between β and γ, but centring removes it again."""
    images = torch.ones(3, 1, SIZE, SIZE)
    region = corner().expand(3, SIZE, SIZE)
    scores = cd_region_scores(linear_model(bias), images, region, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(scores["share"], torch.tensor([0.25, 0.25, 0.25]))
    torch.testing.assert_close(scores["signed_share"], torch.tensor([0.25, -0.25, 0.25]))
    assert "interaction" not in scores


def test_a_shift_common_to_the_classes_does_not_hide_the_region() -> None:
    """A region feeding every class equally adds nothing to the decision: share 0, whatever its size."""
    layer = nn.Linear(SIZE * SIZE, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1).repeat(1, SIZE * SIZE))
        layer.weight[:, corner().flatten()] = 50.0  # the corner: a large common shift
    network = nn.Sequential(nn.Flatten(), layer).eval()
    scores = cd_region_scores(
        network, torch.ones(2, 1, SIZE, SIZE), corner().expand(2, SIZE, SIZE), torch.tensor([0, 1])
    )
    assert scores["share"].tolist() == [0.0, 0.0]


def test_share_of_the_whole_image_is_one_and_of_an_empty_region_undefined() -> None:
    images = torch.ones(2, 1, SIZE, SIZE)
    region = torch.stack([torch.ones(SIZE, SIZE, dtype=torch.bool), torch.zeros(SIZE, SIZE, dtype=torch.bool)])
    share = cd_region_scores(linear_model(), images, region, torch.tensor([0, 0]))["share"]
    assert share[0] == 1.0 and math.isnan(share[1])


def test_interaction_of_a_relu_model_is_known() -> None:
    """h = relu(u0 + u1) on a 2x2 image with u0 = 2 (the region R), u1 = -1 (the ground truth G);
    logits (h, -h). R: β_h = relu(2) = 2, γ_h = relu(1) - 2 = -1; G: β_h = relu(-1) = 0;
    R ∪ G: β_h = 1, γ_h = 0. Class 0: share 2/3, interaction (1 - 2 - 0) / (1 + 0) = -1;
    class 1: everything negated: share 2/3 (signed -2/3), interaction +1."""
    hidden = nn.Linear(4, 1, bias=False)
    head = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
        head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    network = nn.Sequential(nn.Flatten(), hidden, nn.ReLU(), head).eval()
    images = torch.tensor([[2.0, -1.0], [0.0, 0.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    region = torch.tensor([[True, False], [False, False]]).expand(2, 2, 2)
    truth = torch.tensor([[False, True], [False, False]]).expand(2, 2, 2)
    scores = cd_region_scores(network, images, region, torch.tensor([0, 1]), truth)
    torch.testing.assert_close(scores["share"], torch.tensor([2 / 3, 2 / 3]))
    torch.testing.assert_close(scores["signed_share"], torch.tensor([2 / 3, -2 / 3]))
    torch.testing.assert_close(scores["interaction"], torch.tensor([-1.0, 1.0]))


def test_interaction_is_undefined_without_ground_truth() -> None:
    images = torch.ones(2, 1, SIZE, SIZE)
    region = corner().expand(2, SIZE, SIZE)
    truth = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    truth[0, 3, 3] = True
    scores = cd_region_scores(linear_model(), images, region, torch.tensor([0, 0]), truth)
    assert scores["interaction"][0] == 0.0  # a linear model has no interactions
    assert math.isnan(scores["interaction"][1])


def test_occlusion_share_is_known() -> None:
    """Corner pixels 1, the rest 0.5: the fill is 0.5, logit 0 drops from 10 to 8: 2 / (2 + 8);
    logit 1 rises from -10 to -8: the same share, signed -0.2."""
    images = torch.full((2, 1, SIZE, SIZE), 0.5)
    images[:, :, REGION[0], REGION[1]] = 1.0
    region = corner().expand(2, SIZE, SIZE)
    scores = occlusion_scores(linear_model(), images, region, torch.tensor([0, 1]))
    torch.testing.assert_close(scores["share"], torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(scores["signed_share"], torch.tensor([0.2, -0.2]))


def test_occlusion_of_an_empty_region_is_undefined() -> None:
    empty = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    share = occlusion_scores(linear_model(), torch.rand(1, 1, SIZE, SIZE), empty, torch.tensor([0]))["share"]
    assert math.isnan(share[0])


# --- the check -------------------------------------------------------------------------------


def test_check_measures_the_mean_share_and_fails_above_the_threshold() -> None:
    engine = FakeEngine(linear_model(), torch.ones(4, 1, SIZE, SIZE), {"decoy": corner().expand(4, SIZE, SIZE)})
    outcome = run_check(engine, mask="decoy", share={"mean": "<= 0.05", "max": "<= 0.3"})
    assert [(m.name, m.value, m.passed) for m in outcome.measurements] == [
        ("share.mean", 0.25, False),
        ("share.max", 0.25, True),
    ]
    assert outcome.samples == 4 and outcome.undefined == 0
    assert "largest share" in outcome.details[0]
    assert outcome.details[1].split() == ["sample", "label", "predicted", "share", "signed"]
    assert outcome.extra["per_sample"]["share"] == [0.25] * 4


def test_region_mask_applies_to_the_normalised_input() -> None:
    """Corner pixels 0.5 normalise to 0 with mean 0.5, std 0.5: the region holds nothing."""
    images = torch.ones(2, 1, SIZE, SIZE)
    images[:, :, REGION[0], REGION[1]] = 0.5
    regions = {"decoy": corner().expand(2, SIZE, SIZE)}
    normalised = FakeEngine(linear_model(), images, regions, normalize=NormalizeSpec(mean=[0.5], std=[0.5]))
    raw = FakeEngine(linear_model(), images, regions)
    assert run_check(normalised, mask="decoy", share={"mean": "<= 0.05"}).measurements[0].value == 0.0
    assert run_check(raw, mask="decoy", share={"mean": "<= 0.05"}).measurements[0].value == pytest.approx(2 / 14)


def test_box_is_the_same_region_on_every_image() -> None:
    engine = FakeEngine(linear_model(), torch.ones(3, 1, SIZE, SIZE), {})
    outcome = run_check(engine, box=[0, 0, 2, 2], share={"mean": ">= 0.2"})
    assert outcome.passed and outcome.measurements[0].value == 0.25
    assert "box [0:2, 0:2]" in outcome.details[0]


def test_empty_regions_are_undefined_and_counted() -> None:
    regions = corner().repeat(4, 1, 1)
    regions[1:3] = False
    engine = FakeEngine(linear_model(), torch.ones(4, 1, SIZE, SIZE), {"decoy": regions})
    outcome = run_check(engine, mask="decoy", share={"mean": ">= 0.25"})
    assert outcome.passed and outcome.measurements[0].value == 0.25  # the mean of the 2 defined
    assert outcome.undefined == 2 and outcome.samples == 4
    assert "2 undefined, 2 with an empty region" in outcome.details[0]
    assert outcome.extra["per_sample"]["share"] == [0.25, None, None, 0.25]


def test_all_regions_empty_is_undefined_and_fails() -> None:
    engine = FakeEngine(
        linear_model(), torch.ones(2, 1, SIZE, SIZE), {"decoy": torch.zeros(2, SIZE, SIZE, dtype=torch.bool)}
    )
    outcome = run_check(engine, mask="decoy", share={"mean": "<= 0.05"})
    assert math.isnan(outcome.measurements[0].value) and not outcome.passed and outcome.undefined == 2


def test_worst_samples_come_first() -> None:
    regions = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    regions[2] = corner()
    regions[3, 0, 0] = True  # one pixel: 1 / 16
    engine = FakeEngine(linear_model(), torch.ones(4, 1, SIZE, SIZE), {"decoy": regions})
    outcome = run_check(engine, mask="decoy", share={"mean": "<= 0.05"})
    rows = [line.split() for line in outcome.details[2:]]
    assert [row[0] for row in rows] == ["2", "3", "0", "1"]  # largest first, undefined last
    assert rows[0][3:] == ["0.250", "0.250"] and rows[1][3] == "0.062" and rows[2][3] == "nan"


def test_interaction_threshold_in_the_check() -> None:
    truth = corner().flip(0, 1).expand(4, SIZE, SIZE)  # the opposite corner
    engine = FakeEngine(
        linear_model(), torch.rand(4, 1, SIZE, SIZE), {"decoy": corner().expand(4, SIZE, SIZE)}, masks=truth
    )
    outcome = run_check(
        engine, mask="decoy", share={"mean": "<= 1"}, interaction={"max": "<= 0.001", "min": ">= -0.001"}
    )
    assert outcome.passed, outcome.measurements  # a linear model's regions do not interact
    assert [m.name for m in outcome.measurements] == ["share.mean", "interaction.max", "interaction.min"]


def test_occlusion_method_in_the_check() -> None:
    images = torch.full((2, 1, SIZE, SIZE), 0.5)
    images[:, :, REGION[0], REGION[1]] = 1.0
    engine = FakeEngine(linear_model(), images, {"decoy": corner().expand(2, SIZE, SIZE)})
    outcome = run_check(engine, mask="decoy", method="occlusion", share={"mean": "<= 0.05"})
    assert outcome.measurements[0].value == pytest.approx(0.2) and not outcome.passed


@pytest.mark.parametrize("method", ["contextual_decomposition", "occlusion"])
def test_scores_do_not_depend_on_the_batch_or_shard_size(method: str) -> None:
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)
    ).eval()
    images = torch.rand(7, 3, SIZE, SIZE)
    regions = {"decoy": torch.rand(7, SIZE, SIZE) > 0.6}
    values = []
    for batch_size, shard_size in ((1, 7), (3, 7), (7, 7), (2, 1), (2, 3)):
        engine = FakeEngine(
            network,
            images,
            regions,
            labels=torch.arange(7) % 3,
            batch_size=batch_size,
            shard_size=shard_size,
            classes=None,
        )
        values.append(
            run_check(engine, mask="decoy", method=method, share={"mean": "<= 1"}).extra["per_sample"]["share"]
        )
    assert len(values[0]) == 7
    for other in values[1:]:
        assert other == pytest.approx(values[0], abs=1e-5)


def test_empty_regions_are_counted_over_every_shard() -> None:
    regions = corner().repeat(5, 1, 1)
    regions[[1, 4]] = False
    engine = FakeEngine(linear_model(), torch.ones(5, 1, SIZE, SIZE), {"decoy": regions}, shard_size=2)
    outcome = run_check(engine, mask="decoy", share={"mean": ">= 0.25"})
    assert outcome.samples == 5 and "2 undefined, 2 with an empty region" in outcome.details[0]
    assert outcome.extra["per_sample"]["index"] == [0, 1, 2, 3, 4]


# --- errors ----------------------------------------------------------------------------------


class _Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


def test_unsupported_layer_is_a_one_line_spec_error() -> None:
    network = nn.Sequential(nn.Flatten(), _Square(), nn.Linear(SIZE * SIZE, 2)).eval()
    engine = FakeEngine(network, torch.ones(2, 1, SIZE, SIZE), {"decoy": corner().expand(2, SIZE, SIZE)})
    engine.spec.checks = [CheckSpec.model_validate({"id": "other", "shared_interest": {"iou": {"mean": ">= 0"}}})]
    check = CheckSpec.model_validate({"id": "decoy-unused", "region": {"mask": "decoy", "share": {"mean": "<= 0.05"}}})
    engine.spec.checks.append(check)
    with pytest.raises(SpecRuntimeError) as caught:
        decide_check(engine, check)
    error = caught.value
    assert error.location == ("checks", 1, "region", "method")
    assert "\n" not in error.message and error.message.endswith("use method: occlusion")
    assert "layer '1'" in error.message and "_Square" in error.message
    # the same model is fine with occlusion
    assert run_check(engine, mask="decoy", method="occlusion", share={"mean": "<= 1"}).passed


def test_unknown_mask_and_bad_box_are_spec_errors() -> None:
    engine = FakeEngine(linear_model(), torch.ones(1, 1, SIZE, SIZE), {"decoy": corner().expand(1, SIZE, SIZE)})
    with pytest.raises(SpecRuntimeError) as caught:
        run_check(engine, mask="decoi", share={"mean": "<= 0.05"})
    assert caught.value.location == ("checks", 0, "region", "mask")
    assert "did you mean 'decoy'?" in caught.value.message
    with pytest.raises(SpecRuntimeError) as caught:
        run_check(engine, box=[0, 0, 2, SIZE + 1], share={"mean": "<= 0.05"})
    assert caught.value.location == ("checks", 0, "region", "box")
    with pytest.raises(SpecRuntimeError):
        run_check(engine, box=[2, 0, 2, 2], share={"mean": "<= 0.05"})
