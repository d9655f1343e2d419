"""MIF/LIF fidelity curves (Brocki & Chung 2022, docs/methods.md#fidelity-curves): arithmetic and the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pytest_saliency.metrics.fidelity import (
    FILLS,
    ORDERS,
    SCORES,
    FidelityResult,
    SampleScores,
    auc_interval,
    curve_auc,
    default_fractions,
    fidelity_curves,
    fidelity_gap,
    removal_counts,
    sample_scores,
)
from pytest_saliency.metrics.image import gaussian_blur
from pytest_saliency.metrics.saliency import reduce_channels
from pytest_saliency.metrics.seeding import seeded_generator

# --- curve -> number arithmetic, on hand-computed fixtures -----------------------------------

# Three images x five points on the authors' 0..100 axis (x = 0, 25, 50, 75, 100).
AUTHORS_X = [0.0, 25.0, 50.0, 75.0, 100.0]
MIF_LOGITS = torch.tensor(
    [
        [4.0, 2.0, 1.0, 0.5, 0.0],  # / 4 -> 1, .5, .25, .125, 0 -> 25*(.75+.375+.1875+.0625) = 34.375
        [2.0, 2.0, 1.0, 0.0, 0.0],  # / 2 -> 1, 1, .5, 0, 0    -> 25*(1+.75+.25+0)          = 50.0
        [1.0, 0.5, 0.5, 0.5, 0.5],  # / 1 -> 1, .5, .5, .5, .5 -> 25*(.75+.5+.5+.5)         = 56.25
    ]
)
LIF_LOGITS = torch.tensor(
    [
        [4.0, 4.0, 4.0, 4.0, 2.0],  # -> 1, 1, 1, 1, .5 -> 25*(1+1+1+.75) = 93.75
        [2.0, 2.0, 2.0, 1.0, 1.0],  # -> 1, 1, 1, .5, .5 -> 25*(1+1+.75+.5) = 81.25
        [1.0, 1.0, 1.0, 1.0, 1.0],  # -> 100
    ]
)
MIF_AUC = [34.375, 50.0, 56.25]
LIF_AUC = [93.75, 81.25, 100.0]


def test_curve_auc_by_hand_on_the_authors_axis() -> None:
    mif = curve_auc(MIF_LOGITS / MIF_LOGITS[:, :1], AUTHORS_X)
    lif = curve_auc(LIF_LOGITS / LIF_LOGITS[:, :1], AUTHORS_X)
    assert mif.tolist() == pytest.approx(MIF_AUC)
    assert lif.tolist() == pytest.approx(LIF_AUC)


def test_curve_auc_by_hand_on_fractions() -> None:
    # 0.5 * (1 + .5) / 2 + 0.5 * (.5 + .25) / 2 = 0.5625; uneven spacing: .1*(1.5)/2 + .9*(.75)/2
    assert curve_auc(torch.tensor([1.0, 0.5, 0.25]), [0.0, 0.5, 1.0]).item() == pytest.approx(0.5625)
    assert curve_auc(torch.tensor([1.0, 0.5, 0.25]), [0.0, 0.1, 1.0]).item() == pytest.approx(0.4125)
    assert curve_auc(torch.tensor([[3.0]]), [0.0]).tolist() == [0.0]
    with pytest.raises(ValueError, match="points"):
        curve_auc(torch.ones(2, 3), [0.0, 1.0])


def test_fidelity_gap_and_interval_by_hand() -> None:
    gap, half = fidelity_gap(torch.tensor(MIF_AUC), torch.tensor(LIF_AUC))
    mean_mif, mean_lif = sum(MIF_AUC) / 3, sum(LIF_AUC) / 3  # 46.875, 91.6667
    assert gap == pytest.approx(mean_lif - mean_mif) == pytest.approx(44.791666, abs=1e-5)
    var_mif = sum((v - mean_mif) ** 2 for v in MIF_AUC) / 3  # numpy.var, as the authors
    var_lif = sum((v - mean_lif) ** 2 for v in LIF_AUC) / 3
    assert half == pytest.approx(1.96 * math.sqrt(var_mif + var_lif) / math.sqrt(3))
    assert half == pytest.approx(13.645096, abs=1e-5)
    # Two samples, round numbers: var = 0.01 each (ddof=0) -> 1.96 * sqrt(0.02) / sqrt(2) = 0.196.
    gap, half = fidelity_gap(torch.tensor([0.2, 0.4]), torch.tensor([0.8, 0.6]))
    assert (gap, half) == (pytest.approx(0.4), pytest.approx(0.196))
    gap, half = fidelity_gap(torch.tensor([0.2, 0.4]), torch.tensor([0.8, 0.6]), ddof=1)
    assert half == pytest.approx(1.96 * math.sqrt(0.04) / math.sqrt(2))


def test_gap_drops_undefined_samples_and_handles_empty_input() -> None:
    gap, half = fidelity_gap(torch.tensor([0.2, math.nan, 0.4]), torch.tensor([0.8, 0.1, 0.6]))
    assert (gap, half) == (pytest.approx(0.4), pytest.approx(0.196))
    gap, half = fidelity_gap(torch.tensor([]), torch.tensor([]))
    assert math.isnan(gap) and math.isnan(half)
    gap, half = fidelity_gap(torch.tensor([0.3]), torch.tensor([0.5]), ddof=1)
    assert gap == pytest.approx(0.2) and math.isnan(half)
    with pytest.raises(ValueError, match="same length"):
        fidelity_gap(torch.zeros(2), torch.zeros(3))


def test_auc_interval_by_hand() -> None:
    # values 1, 3: std (ddof 0) = 1 -> 1.96 / sqrt(2)
    assert auc_interval(torch.tensor([1.0, 3.0])) == pytest.approx(1.96 / math.sqrt(2))
    assert auc_interval(torch.tensor([1.0, 3.0]), ddof=1) == pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))
    assert math.isnan(auc_interval(torch.tensor([])))


def test_seeded_generator_mixes_the_seed_salt_and_parts() -> None:
    # The keys the fidelity fills and orders and the robustness perturbations have always used.
    def draws(key: int) -> list[float]:
        return torch.rand(4, generator=torch.Generator().manual_seed(key % 2**63)).tolist()

    assert torch.rand(4, generator=seeded_generator(7, 0x51)).tolist() == draws(7 * 1_000_003 + 0x51)
    key = ((7 * 1_000_003 + 0x61) * 1_000_033 + 5) * 1_009 + 2
    assert torch.rand(4, generator=seeded_generator(7, 0x61, 5, 2)).tolist() == draws(key)
    assert torch.rand(4, generator=seeded_generator(-3, 0x52)).tolist() == draws(-3 * 1_000_003 + 0x52)
    with pytest.raises(ValueError, match="at most 2 parts"):
        seeded_generator(0, 1, 2, 3, 4)


def test_default_fractions_and_counts() -> None:
    assert default_fractions(20) == pytest.approx([i * 0.05 for i in range(20)])
    assert default_fractions(20)[-1] == pytest.approx(0.95)
    assert removal_counts([0.0, 0.29, 0.5, 1.0], 100).tolist() == [0, 29, 50, 100]
    assert removal_counts([0.1, 0.3], 4096).tolist() == [409, 1228]  # int() like Quantus ROAD
    with pytest.raises(ValueError):
        default_fractions(0)


# --- the engine --------------------------------------------------------------------------------


class PixelSetModel(nn.Module):
    """Logit 0 = sum of the image over a fixed pixel set (all channels); logit 1 = 0."""

    def __init__(self, pixels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pixels", pixels.float())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = (x * self.pixels).sum(dim=(1, 2, 3))
        return torch.stack([first, torch.zeros_like(first)], dim=1)


class Recorder(nn.Module):
    """Wraps a model; records the batch sizes it sees and whether inference mode was on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []
        self.inference: list[bool] = []
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        self.inference.append(torch.is_inference_mode_enabled())
        return self.inner(x)


def small_cnn(channels: int, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, classes),
    ).eval()


def data(n: int, channels: int, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator), torch.rand(n, size, size, generator=generator)


def predicted(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(dim=1)


def test_mif_and_lif_of_a_pixel_set_model_drop_as_expected() -> None:
    h = w = 10
    pixels = torch.zeros(h, w)
    pixels.view(-1)[torch.randperm(h * w, generator=torch.Generator().manual_seed(0))[:20]] = 1.0
    model = PixelSetModel(pixels)
    images = torch.ones(2, 3, h, w)
    importance = pixels.expand(2, h, w) + 0.0  # the set is the most important; ties elsewhere
    fractions = [0.0, 0.05, 0.1, 0.15, 0.2, 0.5, 0.8, 0.85, 0.9, 1.0]
    result = fidelity_curves(
        model,
        images,
        importance,
        target=torch.zeros(2, dtype=torch.long),
        fractions=fractions,
        orders=("mif", "lif"),
        score="logit",
    )
    k = torch.tensor([round(f * 100) for f in fractions], dtype=torch.float32)
    expected_mif = 1 - k.clamp(max=20) / 20  # every removed unit first takes a set pixel
    expected_lif = 1 - (k - 80).clamp(min=0) / 20  # the set pixels go last
    assert torch.equal(result.clean, torch.full((2,), 60.0))  # 20 pixels x 3 channels of ones
    torch.testing.assert_close(result.curves["mif"], expected_mif.expand(2, -1))
    torch.testing.assert_close(result.curves["lif"], expected_lif.expand(2, -1))
    torch.testing.assert_close(result.scores["mif"], 60.0 * expected_mif.expand(2, -1))
    assert result.counts.tolist() == k.long().tolist()
    assert result.gap > 0.5


def test_patches_sum_importance_and_remove_whole_patches() -> None:
    # 7 x 7 image, 3 x 3 patches -> 3 x 3 units (edge patches are partial).
    pixels = torch.zeros(7, 7)
    pixels[6, 6] = 1.0  # the bottom-right 1 x 1 edge patch
    model = PixelSetModel(pixels)
    importance = torch.zeros(1, 7, 7)
    importance[0, 6, 6] = 5.0  # its own patch, top of the MIF order
    importance[0, 0:3, 0:3] = 0.2  # patch (0, 0) sums to 1.8: second
    result = fidelity_curves(
        model,
        torch.ones(1, 1, 7, 7),
        importance,
        target=torch.zeros(1, dtype=torch.long),
        fractions=[0.0, 1 / 9, 2 / 9],
        unit=3,
        score="logit",
        orders=("mif", "lif"),
    )
    assert result.n_units == 9
    assert result.counts.tolist() == [0, 1, 2]
    assert result.scores["mif"][0].tolist() == [1.0, 0.0, 0.0]
    assert result.scores["lif"][0].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("fill", ["zeros", "uniform", "noisy_linear"])
def test_per_sample_curves_do_not_depend_on_the_batch_size(fill: str) -> None:
    model = small_cnn(3)
    images, importance = data(7, 3, size=10)
    target = predicted(model, images)
    results = [
        fidelity_curves(model, images, importance, target=target, steps=5, orders=ORDERS, fill=fill, batch_size=bs)
        for bs in (7, 64, 1000)
    ]
    for other in results[1:]:
        for order in ORDERS:
            torch.testing.assert_close(other.curves[order], results[0].curves[order], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(other.auc[order], results[0].auc[order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fill", ["uniform", "noisy_linear"])
def test_a_samples_curves_follow_its_index_not_its_position(fill: str) -> None:
    # Samples 4..6 of a data set computed alone (one shard) with their indices have the curves
    # they have among all seven: the tie keys, the random order and the fill noise are drawn per
    # sample. Flat importance makes every order the seeded tie-break.
    model = small_cnn(3)
    images, _ = data(7, 3, size=10)
    importance = torch.zeros(7, 10, 10)
    target = predicted(model, images)
    settings = {"steps": 5, "orders": ORDERS, "fill": fill, "seed": 3}
    whole = fidelity_curves(model, images, importance, target=target, **settings)
    part = slice(4, 7)
    alone = fidelity_curves(
        model, images[part], importance[part], target=target[part], indices=torch.arange(4, 7), **settings
    )
    by_position = fidelity_curves(model, images[part], importance[part], target=target[part], **settings)
    for order in ORDERS:
        torch.testing.assert_close(alone.scores[order], whole.scores[order][part], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(by_position.scores["random"], whole.scores["random"][part])
    with pytest.raises(ValueError, match="indices"):
        fidelity_curves(model, images, importance, target=target, indices=[0, 1], steps=3)


def test_the_summary_of_concatenated_shards_is_that_of_the_whole_batch() -> None:
    # What the engine does: each shard's per-sample scores, concatenated, summed up once.
    model = small_cnn(3)
    images, importance = data(7, 3, size=10)
    target = predicted(model, images)
    settings = {"steps": 4, "orders": ("mif", "lif", "random", "insertion"), "fill": "uniform", "score": "logit"}
    whole = fidelity_curves(model, images, importance, target=target, **settings)
    shards = [
        sample_scores(model, images[part], importance[part], target=target[part], indices=range(7)[part], **settings)
        for part in (slice(0, 3), slice(3, 4), slice(4, 7))
    ]
    merged = SampleScores(
        fractions=shards[0].fractions,
        scores={order: torch.cat([shard.scores[order] for shard in shards]) for order in settings["orders"]},
        clean=torch.cat([shard.clean for shard in shards]),
        n_units=shards[0].n_units,
    )
    result = FidelityResult.from_scores(merged, score="logit", fill="uniform", unit=1)
    assert torch.equal(result.defined, whole.defined) and result.counts.tolist() == whole.counts.tolist()
    assert (result.gap, result.gap_interval) == pytest.approx((whole.gap, whole.gap_interval), abs=1e-6)
    for order in settings["orders"]:
        torch.testing.assert_close(result.curves[order], whole.curves[order], equal_nan=True)
        assert result.mean_auc(order) == pytest.approx(whole.mean_auc(order), abs=1e-6)


def test_model_batches_inference_mode_and_shared_passes() -> None:
    model = Recorder(small_cnn(1))
    images, importance = data(10, 1)
    target = predicted(model.inner, images)
    fidelity_curves(
        model, images, importance, target=target, fractions=[0.0, 0.5, 1.0], orders=("mif", "lif"), batch_size=8
    )
    # clean + MIF@0.5 + LIF@0.5 + everything removed (shared by the orders) = 4 x 10 inputs
    assert sum(model.sizes) == 40
    assert model.sizes == [8, 8, 8, 8, 8]  # full batches across (image, step) pairs
    assert all(model.inference)


def test_an_accuracy_curve_without_a_clean_point_skips_the_clean_pass() -> None:
    model = Recorder(small_cnn(1))
    images, importance = data(6, 1)
    target = predicted(model.inner, images)
    result = fidelity_curves(
        model, images, importance, target=target, fractions=[0.1, 0.3], orders=("mif",), score="accuracy"
    )
    assert sum(model.sizes) == 12  # two points x six images, as Quantus ROAD
    assert torch.isnan(result.clean).all() and result.defined.all()
    model.sizes.clear()
    with_clean = fidelity_curves(
        model, images, importance, target=target, fractions=[0.0, 0.1, 0.3], orders=("mif",), score="accuracy"
    )
    assert sum(model.sizes) == 18
    assert torch.equal(with_clean.clean, with_clean.scores["mif"][:, 0])
    assert torch.equal(with_clean.scores["mif"][:, 1:], result.scores["mif"])


def test_reruns_are_deterministic_and_the_seed_matters() -> None:
    model = small_cnn(3)
    images, _ = data(6, 3)
    importance = torch.zeros(6, 12, 12)  # all ties: the order is the seeded tie-break
    target = predicted(model, images)
    run = lambda seed: fidelity_curves(  # noqa: E731
        model, images, importance, target=target, orders=ORDERS, fill="noisy_linear", seed=seed, steps=8
    )
    first, again, other = run(0), run(0), run(1)
    for order in ORDERS:
        assert torch.equal(first.curves[order], again.curves[order])
    assert not torch.equal(first.curves["random"], other.curves["random"])
    assert not torch.equal(first.curves["mif"], other.curves["mif"])


def test_lif_is_the_reverse_of_mif() -> None:
    pixels = torch.eye(4)
    model = PixelSetModel(pixels)
    importance = torch.arange(16.0).view(1, 4, 4)
    result = fidelity_curves(
        model,
        torch.ones(1, 1, 4, 4),
        -importance,
        target=torch.zeros(1, dtype=torch.long),
        fractions=[i / 16 for i in range(17)],
        orders=("mif", "lif"),
        score="logit",
    )
    flipped = fidelity_curves(
        model,
        torch.ones(1, 1, 4, 4),
        importance,
        target=torch.zeros(1, dtype=torch.long),
        fractions=[i / 16 for i in range(17)],
        orders=("mif", "lif"),
        score="logit",
    )
    assert torch.equal(result.curves["mif"], flipped.curves["lif"])
    assert torch.equal(result.curves["lif"], flipped.curves["mif"])


def test_insertion_puts_the_most_important_pixels_back_into_the_blurred_image() -> None:
    # RISE insertion (docs/methods.md, "Insertion"): at fraction f the floor(f * 16) most
    # important pixels are the image's own, the rest the blurred image's; the curve is the raw score.
    model = PixelSetModel(torch.eye(4))
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 1, 4, 4, generator=generator)
    importance = torch.rand(2, 4, 4, generator=generator)  # no ties
    fractions = [i / 16 for i in range(17)]
    blurred = gaussian_blur(images)
    expected = torch.empty(2, 17)
    order = importance.flatten(1).argsort(dim=1, descending=True)
    for k in range(17):
        kept = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, order[:, :k], True).view(2, 1, 4, 4)
        expected[:, k] = model(torch.where(kept, images, blurred))[:, 0]
    for fill in ("zeros", "blur", "noisy_linear"):  # the fill of the other orders does not matter
        result = fidelity_curves(
            model,
            images,
            importance,
            target=torch.zeros(2, dtype=torch.long),
            fractions=fractions,
            orders=("mif", "insertion"),
            fill=fill,
            score="logit",
        )
        torch.testing.assert_close(result.curves["insertion"], expected)
        torch.testing.assert_close(result.scores["insertion"], expected)
        torch.testing.assert_close(result.auc["insertion"], curve_auc(expected, fractions))


@pytest.mark.parametrize("orders", [("insertion", "mif", "lif", "random"), ("mif", "insertion")])
def test_insertion_first_does_not_lend_its_blurred_image_to_the_removal_orders(orders: tuple[str, ...]) -> None:
    # Every pixel removed with fill zeros leaves a sum of 0, whichever order comes first; the
    # fully blurred image of insertion (k = 0 inserted) is a job of its own.
    model = PixelSetModel(torch.ones(6, 6))
    generator = torch.Generator().manual_seed(8)
    images = torch.rand(3, 1, 6, 6, generator=generator) + 0.5
    result = fidelity_curves(
        model,
        images,
        torch.rand(3, 6, 6, generator=generator),
        target=torch.zeros(3, dtype=torch.long),
        fractions=[0.0, 0.5, 1.0],
        orders=orders,  # type: ignore[arg-type]
        fill="zeros",
        score="logit",
    )
    for order in orders:
        if order != "insertion":
            assert result.scores[order][:, -1].tolist() == [0.0, 0.0, 0.0]
    insertion = result.scores["insertion"]
    torch.testing.assert_close(insertion[:, 0], gaussian_blur(images).sum(dim=(1, 2, 3)))
    torch.testing.assert_close(insertion[:, -1], images.sum(dim=(1, 2, 3)))


def test_insertion_rewards_the_pixels_the_model_reads() -> None:
    pixels = torch.zeros(8, 8)
    pixels[2:4, 2:4] = 1.0
    model = PixelSetModel(pixels)
    noise = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    images = 0.1 * noise + 5.0 * pixels  # a bright patch that blurring dims
    target = torch.zeros(3, dtype=torch.long)
    right = fidelity_curves(
        model, images, pixels.expand(3, 8, 8) + 0.0, target=target, orders=("insertion",), score="logit"
    )
    wrong = fidelity_curves(
        model, images, 1.0 - pixels.expand(3, 8, 8), target=target, orders=("insertion",), score="logit"
    )
    assert right.mean_auc("insertion") > wrong.mean_auc("insertion")


def test_random_attribution_has_no_gap_within_its_interval() -> None:
    model = small_cnn(3, classes=3, seed=1)
    images, _ = data(48, 3, size=10, seed=2)
    importance = torch.rand(48, 10, 10, generator=torch.Generator().manual_seed(9))
    result = fidelity_curves(
        model, images, importance, target=predicted(model, images), steps=10, orders=ORDERS, fill="mean"
    )
    assert abs(result.gap) <= result.gap_interval
    assert result.gap_interval > 0
    # The random order agrees with both within their intervals as well.
    assert abs(result.mean_auc("random") - result.mean_auc("mif")) <= 2 * result.auc_interval("mif") + 1e-9


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("score", SCORES)
def test_every_fill_and_score_runs_on_rgb_and_grayscale(channels: int, fill: str, score: str) -> None:
    model = small_cnn(channels)
    images, importance = data(5, channels, size=9)
    target = predicted(model, images)
    target[0] = (target[0] + 1) % 4  # one misclassified sample
    result = fidelity_curves(
        model, images, importance, target=target, steps=4, fill=fill, score=score, unit=2, batch_size=8
    )
    assert result.fractions.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75])
    for order in ("mif", "lif"):
        assert result.curves[order].shape == (5, 4) and result.auc[order].shape == (5,)
        defined = result.curves[order][result.defined]
        assert torch.isfinite(defined).all()
    if score == "accuracy":
        assert set(result.curves["mif"].unique().tolist()) <= {0.0, 1.0}
        assert result.curves["mif"][0, 0] == 0.0  # not divided per sample
        assert result.curves["mif"][1:, 0].tolist() == [1.0] * 4
    elif score == "probability":
        assert result.defined.all()
        torch.testing.assert_close(result.curves["mif"][:, 0], torch.ones(5))
    json.dumps(result.to_dict(), allow_nan=False)


def test_four_dimensional_attributions_are_reduced_with_channels() -> None:
    model = small_cnn(3)
    images, _ = data(4, 3)
    attributions = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    target = predicted(model, images)
    for reduction in ("sum", "abs_sum"):
        a = fidelity_curves(model, images, attributions, target=target, channels=reduction, steps=4)
        b = fidelity_curves(model, images, reduce_channels(attributions, reduction), target=target, steps=4)
        assert torch.equal(a.curves["mif"], b.curves["mif"])


def test_non_positive_clean_logits_are_undefined_and_counted() -> None:
    pixels = torch.ones(4, 4)
    model = PixelSetModel(pixels)
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4), 2 * torch.ones(1, 4, 4)])
    result = fidelity_curves(
        model, images, torch.rand(3, 4, 4), target=torch.zeros(3, dtype=torch.long), steps=4, score="logit"
    )
    assert result.defined.tolist() == [True, False, True]
    assert torch.isnan(result.curves["mif"][1]).all()
    assert result.n == 2
    summary = result.to_dict()
    assert summary["n_undefined"] == 1 and summary["n"] == 2
    assert summary["orders"]["mif"]["auc"][1] is None
    assert math.isfinite(result.gap) and math.isfinite(result.mean_auc("mif"))
    json.dumps(summary, allow_nan=False)


def test_insertion_keeps_a_sample_whose_clean_score_is_not_positive() -> None:
    # Insertion's curve is the raw score, never divided by the clean one (docs/methods.md, "Insertion").
    model = PixelSetModel(torch.ones(4, 4))
    images = torch.stack([torch.ones(1, 4, 4), -torch.ones(1, 4, 4), 2 * torch.ones(1, 4, 4)])
    target = torch.zeros(3, dtype=torch.long)
    for orders in (("mif", "lif", "insertion"), ("insertion",)):
        result = fidelity_curves(
            model, images, torch.rand(3, 4, 4), target=target, steps=4, score="logit", orders=orders
        )
        torch.testing.assert_close(result.curves["insertion"], result.scores["insertion"])
        assert torch.isfinite(result.auc["insertion"]).all()
        assert result.defined_in("insertion").tolist() == [True, True, True]
        assert result.mean_auc("insertion") == pytest.approx(float(result.auc["insertion"].mean()))
        summary = result.to_dict()
        assert summary["orders"]["insertion"]["n"] == 3
        assert summary["n_undefined"] == (0 if orders == ("insertion",) else 1)
    assert result.defined.tolist() == [True, False, True]  # the removal orders' curves cannot be divided


def test_result_summary_and_accessors() -> None:
    model = small_cnn(1)
    images, importance = data(6, 1)
    result = fidelity_curves(model, images, importance, target=predicted(model, images), steps=4)
    assert isinstance(result, FidelityResult)
    assert result.orders == ("mif", "lif")
    assert result.gap == pytest.approx(result.mean_auc("lif") - result.mean_auc("mif"))
    expected = fidelity_gap(result.auc["mif"], result.auc["lif"])
    assert (result.gap, result.gap_interval) == pytest.approx(expected)
    assert result.auc_interval("mif") == pytest.approx(auc_interval(result.auc["mif"]))
    torch.testing.assert_close(result.mean_curve("mif"), result.curves["mif"].double().mean(0))
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["fractions"] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert summary["gap"] == pytest.approx(result.gap)
    assert summary["orders"]["lif"]["mean_auc"] == pytest.approx(result.mean_auc("lif"))
    with pytest.raises(KeyError, match="random"):
        result.mean_auc("random")


def test_empty_input_gives_empty_curves() -> None:
    model = small_cnn(1)
    result = fidelity_curves(
        model, torch.zeros(0, 1, 6, 6), torch.zeros(0, 6, 6), target=torch.zeros(0, dtype=torch.long), steps=3
    )
    assert result.curves["mif"].shape == (0, 3)
    assert math.isnan(result.gap) and math.isnan(result.mean_auc("mif"))
    json.dumps(result.to_dict(), allow_nan=False)


def test_training_mode_model_warns() -> None:
    model = small_cnn(1).train()
    images, importance = data(2, 1)
    with pytest.warns(UserWarning, match="eval"):
        fidelity_curves(model, images, importance, target=torch.zeros(2, dtype=torch.long), steps=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"orders": ("mif", "best")}, "orders"),
        ({"orders": ("mif", "mif")}, "orders"),
        ({"fill": "black"}, "unknown fill"),
        ({"score": "loss"}, "unknown score"),
        ({"unit": 0}, "unit"),
        ({"batch_size": 0}, "batch_size"),
        ({"fractions": [0.5, 0.2]}, "non-decreasing"),
        ({"fractions": [0.0, 1.5]}, "non-decreasing"),
        ({"target": torch.zeros(3, dtype=torch.long)}, "target"),
        ({"importance": torch.zeros(2, 5, 5)}, "importance"),
        ({"importance": torch.full((2, 6, 6), math.nan)}, "NaN"),
        ({"images": torch.full((2, 1, 6, 6), math.inf)}, "infinite"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    arguments = {
        "images": torch.zeros(2, 1, 6, 6),
        "importance": torch.zeros(2, 6, 6),
        "target": torch.zeros(2, dtype=torch.long),
        "steps": 3,
    }
    arguments.update(kwargs)
    images = arguments.pop("images")
    importance = arguments.pop("importance")
    with pytest.raises(ValueError, match=message):
        fidelity_curves(small_cnn(1), images, importance, **arguments)


# --- properties --------------------------------------------------------------------------------

fraction_lists = st.lists(st.floats(0, 1), min_size=2, max_size=12).map(sorted)


@settings(max_examples=60, deadline=None)
@given(fractions=fraction_lists, level=st.floats(-10, 10))
def test_auc_of_a_constant_curve_is_level_times_span(fractions: list[float], level: float) -> None:
    curve = torch.full((3, len(fractions)), level, dtype=torch.float64)
    auc = curve_auc(curve, fractions)
    assert auc.tolist() == pytest.approx([level * (fractions[-1] - fractions[0])] * 3, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    fractions=fraction_lists,
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_auc_is_linear_in_the_curve(fractions: list[float], a: float, b: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, len(fractions), generator=generator, dtype=torch.float64)
    y = torch.rand(2, len(fractions), generator=generator, dtype=torch.float64)
    left = curve_auc(a * x + b * y, fractions)
    right = a * curve_auc(x, fractions) + b * curve_auc(y, fractions)
    torch.testing.assert_close(left, right, atol=1e-9, rtol=1e-9)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 30))
def test_gap_is_antisymmetric_and_interval_symmetric(data: st.DataObject, n: int) -> None:
    mif = torch.tensor(data.draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n)), dtype=torch.float64)
    lif = torch.tensor(data.draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n)), dtype=torch.float64)
    gap, half = fidelity_gap(mif, lif)
    swapped_gap, swapped_half = fidelity_gap(lif, mif)
    assert swapped_gap == pytest.approx(-gap, abs=1e-9)
    assert swapped_half == pytest.approx(half, abs=1e-9)
    assert half >= 0
    same_gap, _ = fidelity_gap(mif, mif)
    assert same_gap == pytest.approx(0.0, abs=1e-9)
    shifted_gap, shifted_half = fidelity_gap(mif, lif + 1.5)  # shifting LIF moves the gap only
    assert shifted_gap == pytest.approx(gap + 1.5, abs=1e-9)
    assert shifted_half == pytest.approx(half, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(fractions=fraction_lists, units=st.integers(1, 5000))
def test_removal_counts_are_monotone_and_bounded(fractions: list[float], units: int) -> None:
    counts = removal_counts(fractions, units)
    assert counts.tolist() == sorted(counts.tolist())
    assert 0 <= counts.min().item() and counts.max().item() <= units
    assert all(abs(c - f * units) < 1 for c, f in zip(counts.tolist(), fractions, strict=True))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), levels=st.integers(1, 6), steps=st.integers(2, 6))
def test_curves_start_at_one_and_mif_removes_in_importance_order(seed: int, levels: int, steps: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(6, 6, generator=generator) < 0.5).float()
    model = PixelSetModel(pixels + 0.01)  # a positive logit whatever is removed
    importance = torch.randint(0, levels, (2, 6, 6), generator=generator).float()  # many ties
    images = torch.rand(2, 1, 6, 6, generator=generator) + 0.1
    result = fidelity_curves(
        model,
        images,
        importance,
        target=torch.zeros(2, dtype=torch.long),
        steps=steps,
        orders=ORDERS,
        score="logit",
        seed=seed,
    )
    for order in ("mif", "lif", "random"):  # removal curves; insertion starts from the blurred image
        torch.testing.assert_close(result.curves[order][:, 0], torch.ones(2))
        # removing more never increases a sum of non-negative pixels
        assert (result.scores[order].diff(dim=1) <= 1e-5).all()
