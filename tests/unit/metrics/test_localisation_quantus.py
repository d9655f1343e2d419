"""The localisation and complexity metrics against Quantus 0.6.0 on identical inputs.

Quantus is called with ``normalise=False`` and ``abs=False`` (unless stated), so both sides see the
very same ``(N, 1, H, W)`` maps; its model is not used by these metrics. Where Quantus' definition
differs from the source's, the test says how and checks the difference itself:

- PointingGame: Quantus has no tolerance (ours with ``tolerance=0``), and marks an empty mask
  by writing NaN into a bool array, which reads back as True: an empty mask is a hit
  (docs/methods.md, "Localisation"). Ours is NaN.
- RelevanceRankAccuracy, TopKIntersection: Quantus orders ties by numpy's unstable argsort;
  ours counts tied pixels at the cut by their share of the mask. The maps here have no ties.
- Sparseness adds ``1e-7`` to every value before the Gini index, Complexity ``1e-12`` inside the
  log; both move the score by less than the 1e-5 allowed. For an all-zero map Quantus' Sparseness
  is 0 (a flat map) and ours NaN (no mass: undefined).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

quantus = pytest.importorskip("quantus", reason="the Quantus comparison needs `pip install -e .[bench]`")

from pytest_saliency.metrics import complexity as ours_complexity  # noqa: E402
from pytest_saliency.metrics import localisation  # noqa: E402

N, SIZE = 8, 12


def workload(signed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Tie-free maps and masks of varied sizes (one sample with an empty mask, last)."""
    generator = torch.Generator().manual_seed(7)
    maps = torch.rand(N, SIZE, SIZE, generator=generator, dtype=torch.float64)
    if signed:
        maps = maps - 0.3
    masks = torch.zeros(N, SIZE, SIZE, dtype=torch.bool)
    for i in range(N - 1):
        masks[i, i : i + 3 + i % 3, 2 : 2 + 2 + i] = True
    maps[1, 2, 3] = 5.0  # a maximum on the mask
    maps[2, 11, 11] = 5.0  # a maximum far from it
    return maps, masks


def quantus_scores(metric, maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    a = maps.numpy()[:, None].astype(np.float64)
    x = np.zeros((len(maps), 1, SIZE, SIZE), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=None,
            x_batch=x,
            y_batch=np.zeros(len(maps), int),
            a_batch=a,
            s_batch=masks.numpy()[:, None].astype(np.float64),
            device="cpu",
        )
    return np.asarray(scores, dtype=np.float64)


def options(**extra) -> dict:
    return {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False, **extra}


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (localisation.relevance_mass_accuracy, lambda: quantus.RelevanceMassAccuracy(**options())),
        (localisation.relevance_rank_accuracy, lambda: quantus.RelevanceRankAccuracy(**options())),
        (lambda a, s: localisation.top_k_intersection(a, s, 10), lambda: quantus.TopKIntersection(k=10, **options())),
        (localisation.auc, lambda: quantus.AUC(**options())),
    ],
    ids=["relevance_mass_accuracy", "relevance_rank_accuracy", "top_k_intersection", "auc"],
)
@pytest.mark.parametrize("signed", [False, True])
def test_equals_quantus(ours, theirs, signed: bool) -> None:
    maps, masks = workload(signed)
    expected = quantus_scores(theirs(), maps, masks)
    got = ours(maps, masks).numpy()
    assert np.isnan(got[-1]) and np.isnan(expected[-1])  # the empty mask: undefined on both sides
    np.testing.assert_allclose(got[:-1], expected[:-1], atol=1e-5, rtol=0)


def test_attribution_localisation_equals_quantus_on_positive_attributions() -> None:
    # Quantus divides by (total + 1e-9); its abs default would count negative attribution as mass.
    maps, masks = workload(signed=True)
    metric = quantus.AttributionLocalisation(positive_attributions=True, **options())
    expected = quantus_scores(metric, maps, masks)
    got = localisation.attribution_localisation(maps, masks).numpy()
    np.testing.assert_allclose(got[:-1], expected[:-1], atol=1e-5, rtol=0)
    assert np.isnan(got[-1]) and np.isnan(expected[-1])


def test_pointing_game_equals_quantus_except_the_empty_mask() -> None:
    maps, masks = workload()
    expected = quantus_scores(quantus.PointingGame(**options()), maps, masks)
    got = localisation.pointing_game(maps, masks, tolerance=0).numpy()
    np.testing.assert_array_equal(got[:-1], expected[:-1])
    assert got[1] == 1.0 and got[2] == 0.0
    # The Quantus 0.6.0 defect: NaN written into its bool hit array reads back as a hit.
    assert expected[-1] == 1.0 and np.isnan(got[-1])


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(ours_complexity.sparseness, quantus.Sparseness), (ours_complexity.complexity, quantus.Complexity)],
    ids=["sparseness", "complexity"],
)
@pytest.mark.parametrize("signed", [False, True])
def test_complexity_equals_quantus(ours, theirs, signed: bool) -> None:
    maps, masks = workload(signed)
    metric = theirs(normalise=False, abs=True, disable_warnings=True, display_progressbar=False)
    expected = quantus_scores(metric, maps, masks)
    np.testing.assert_allclose(ours(maps).numpy(), expected, atol=1e-5, rtol=0)


def test_sparseness_of_an_all_zero_map_is_undefined_not_flat() -> None:
    maps = torch.zeros(2, SIZE, SIZE, dtype=torch.float64)
    maps[1, 0, 0] = 1.0
    metric = quantus.Sparseness(normalise=False, abs=True, disable_warnings=True, display_progressbar=False)
    expected = quantus_scores(metric, maps, torch.zeros_like(maps, dtype=torch.bool))
    got = ours_complexity.sparseness(maps).numpy()
    assert expected[0] == pytest.approx(0.0, abs=1e-9) and np.isnan(got[0])
    # One pixel: exactly 1 - 1/P here; Quantus' 1e-7 on the 143 zeros moves it by 1.4e-5.
    assert got[1] == pytest.approx(1 - 1 / SIZE**2, abs=1e-12) and expected[1] == pytest.approx(got[1], abs=2e-5)


def test_auc_equals_quantus_with_ties_counted_one_half() -> None:
    maps, masks = workload()
    maps = (maps * 3).floor()  # four levels: many ties
    expected = quantus_scores(quantus.AUC(**options()), maps, masks)
    np.testing.assert_allclose(localisation.auc(maps, masks).numpy()[:-1], expected[:-1], atol=1e-12, rtol=0)
