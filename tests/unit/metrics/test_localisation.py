"""Localisation and complexity metrics (docs/methods.md): hand-computed vectors, the undefined
cases, and properties that hold for any map: range, scale invariance, batch-split invariance."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pytest_saliency.metrics import complexity, localisation

MASK_METRICS = {
    "pointing_game": localisation.pointing_game,
    "attribution_localisation": localisation.attribution_localisation,
    "relevance_mass_accuracy": localisation.relevance_mass_accuracy,
    "relevance_rank_accuracy": localisation.relevance_rank_accuracy,
    "top_k_intersection": lambda a, s: localisation.top_k_intersection(a, s, 5),
    "auc": localisation.auc,
    "energy_pointing_game": localisation.energy_pointing_game,
}
MAP_METRICS = {"sparseness": complexity.sparseness, "complexity": complexity.complexity}


def _ignoring_mask(
    metric: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A map metric called like the mask metrics, ``metric(maps, masks)``; the masks are unused."""
    return lambda a, s: metric(a)


ALL_METRICS = {**MASK_METRICS, **{name: _ignoring_mask(metric) for name, metric in MAP_METRICS.items()}}


def one_pixel_mask(size: int, row: int, column: int) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, row, column] = True
    return mask


@pytest.mark.parametrize(
    ("peak", "tolerance", "hit"),
    [
        ((5, 5), 0, 1.0),
        ((5, 6), 0, 0.0),
        ((5, 20), 15, 1.0),
        ((5, 20), 14, 0.0),
        ((16, 16), 15, 0.0),
        ((14, 17), 15, 1.0),
    ],
)
def test_pointing_game_tolerance_is_a_euclidean_radius(peak: tuple[int, int], tolerance: int, hit: float) -> None:
    # (16, 16) is 11·√2 ≈ 15.6 px from (5, 5), (14, 17) is 15 px away exactly
    maps = torch.zeros(1, 32, 32)
    maps[0, peak[0], peak[1]] = 1.0
    assert localisation.pointing_game(maps, one_pixel_mask(32, 5, 5), tolerance=tolerance).item() == hit


def test_pointing_game_default_tolerance_is_the_papers_15_pixels() -> None:
    maps = torch.zeros(1, 32, 32)
    maps[0, 5, 20] = 1.0
    assert localisation.POINTING_TOLERANCE == 15
    assert localisation.pointing_game(maps, one_pixel_mask(32, 5, 5)).item() == 1.0


def test_empty_masks_and_massless_maps_are_undefined() -> None:
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1, :4] = True
    for name, metric in MASK_METRICS.items():
        scores = metric(maps, masks)
        assert math.isnan(scores[0]) and not math.isnan(scores[1]), name
    flat = torch.zeros(1, 8, 8)
    half = masks[1:]
    assert math.isnan(localisation.pointing_game(flat, half))  # a constant map points nowhere
    assert math.isnan(localisation.relevance_mass_accuracy(flat, half))
    assert math.isnan(localisation.attribution_localisation(-torch.ones(1, 8, 8), half))
    assert math.isnan(localisation.auc(maps[1:], torch.ones(1, 8, 8, dtype=torch.bool)))  # no negatives
    assert math.isnan(complexity.sparseness(flat)) and math.isnan(complexity.complexity(flat))


def test_a_map_holding_nan_is_undefined_never_a_miss_or_a_number() -> None:
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps[0] = math.nan  # all NaN (AUC read 1.02 and the pointing game a miss)
    maps[1, 6, 6] = math.nan  # one NaN pixel off the mask
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, :4] = True
    for name, metric in ALL_METRICS.items():
        scores = metric(maps, masks)
        assert torch.isnan(scores[:2]).all() and not math.isnan(scores[2]), name


def test_hand_computed_values() -> None:
    maps = torch.tensor([[[3.0, 2.0], [2.0, 1.0]]])
    mask = torch.tensor([[[True, True], [False, False]]])
    # positives {3, 2}, negatives {2, 1}: pairs 1 + 1 + 1/2 + 1 of 4
    assert localisation.auc(maps, mask).item() == pytest.approx(0.875)
    assert localisation.relevance_mass_accuracy(maps, mask).item() == pytest.approx(5 / 8)
    # K = 2: 3 is in, and one of the two tied 2s, of which one is on the mask: 1 + 1/2 of 2
    assert localisation.relevance_rank_accuracy(maps, mask).item() == pytest.approx(0.75)
    assert localisation.top_k_intersection(maps, mask, 1).item() == 1.0
    assert localisation.top_k_intersection(maps, mask, 3).item() == pytest.approx(2 / 3)
    signed = torch.tensor([[[2.0, -1.0], [1.0, -4.0]]])
    assert localisation.attribution_localisation(signed, mask).item() == pytest.approx(2 / 3)
    assert localisation.relevance_mass_accuracy(signed, mask).item() == pytest.approx(1 / -2)
    assert complexity.sparseness(torch.tensor([[[0.0, 0.0], [0.0, 5.0]]])).item() == pytest.approx(0.75)
    assert complexity.complexity(torch.ones(1, 2, 2)).item() == pytest.approx(math.log(4))
    assert complexity.complexity(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])).item() == pytest.approx(math.log(2))


def test_energy_pointing_game_counts_the_masks_bounding_box() -> None:
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 3, 4] = True  # box rows 1..3, columns 1..4: 12 pixels
    maps = torch.ones(1, 6, 6)
    maps[0, 5, 5] = -7.0  # negative energy is not energy
    assert localisation.energy_pointing_game(maps, mask).item() == pytest.approx(12 / 35)


def test_flat_maps_score_chance() -> None:
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, :3] = True
    flat = torch.full((1, 10, 10), 0.5)
    assert localisation.auc(flat, mask).item() == 0.5
    assert localisation.relevance_rank_accuracy(flat, mask).item() == pytest.approx(0.3)
    assert localisation.top_k_intersection(flat, mask, 7).item() == pytest.approx(0.3)


def test_top_k_rejects_a_k_outside_the_image() -> None:
    with pytest.raises(ValueError, match="between 1 and the 16 pixels"):
        localisation.top_k_intersection(torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), 17)


# --- properties ------------------------------------------------------------------------------

SIDE = 6
maps_strategy = arrays(np.float64, (3, SIDE, SIDE), elements=st.integers(0, 4).map(float))  # many ties
masks_strategy = arrays(np.bool_, (3, SIDE, SIDE))


@settings(max_examples=60, deadline=None)
@given(maps=maps_strategy, masks=masks_strategy, scale=st.sampled_from([0.001, 3.0, 1000.0]))
def test_range_and_scale_invariance(maps: np.ndarray, masks: np.ndarray, scale: float) -> None:
    a, s = torch.from_numpy(maps), torch.from_numpy(masks)
    for name, metric in ALL_METRICS.items():
        scores = metric(a, s)
        scaled = metric(a * scale, s)
        np.testing.assert_allclose(scaled.numpy(), scores.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
        defined = scores[~scores.isnan()]
        upper = math.log(SIDE * SIDE) if name == "complexity" else 1.0
        assert bool(((defined >= -1e-12) & (defined <= upper + 1e-12)).all()), name


@settings(max_examples=40, deadline=None)
@given(
    maps=arrays(np.float64, (7, SIDE, SIDE), elements=st.integers(-3, 4).map(float)),
    masks=arrays(np.bool_, (7, SIDE, SIDE)),
    split=st.integers(1, 6),
)
def test_per_sample_values_do_not_depend_on_the_batch_split(maps: np.ndarray, masks: np.ndarray, split: int) -> None:
    a, s = torch.from_numpy(maps), torch.from_numpy(masks)
    for name, metric in ALL_METRICS.items():
        whole = metric(a, s)
        parts = torch.cat(
            [metric(a_part, s_part) for a_part, s_part in zip(a.split(split), s.split(split), strict=True)]
        )
        np.testing.assert_array_equal(parts.numpy(), whole.numpy(), err_msg=name)


@settings(max_examples=60, deadline=None)
@given(maps=maps_strategy, masks=masks_strategy)
def test_auc_equals_sklearn_with_ties(maps: np.ndarray, masks: np.ndarray) -> None:
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    scores = localisation.auc(torch.from_numpy(maps), torch.from_numpy(masks)).numpy()
    for score, a, s in zip(scores, maps, masks, strict=True):
        if 0 < s.sum() < s.size:
            assert score == pytest.approx(roc_auc_score(s.ravel(), a.ravel()), abs=1e-12)
        else:
            assert math.isnan(score)


@settings(max_examples=40, deadline=None)
@given(masks=arrays(np.bool_, (2, 9, 13), elements=st.booleans() | st.just(False)), radius=st.integers(0, 12))
def test_the_pointing_games_grown_mask_is_the_disc_dilation(masks: np.ndarray, radius: int) -> None:
    s = torch.from_numpy(masks)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disc = (offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2 <= radius**2).float()
    reference = torch.nn.functional.conv2d(s.float().unsqueeze(1), disc.view(1, 1, *disc.shape), padding=radius)
    assert torch.equal(localisation._grow(s, radius), reference.squeeze(1) > 0.5)
