"""Shared Interest scores (docs/methods.md#shared-interest): test vectors, undefined cases, batch invariance and
properties that must hold for any pair of regions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pytest_saliency.checks.aggregation import aggregate
from pytest_saliency.metrics.shared_interest import (
    defined,
    ground_truth_coverage,
    iou,
    saliency_coverage,
)

SIZE = 250
# (G slices, S slices, IoU, GTC, SC) from docs/methods.md#shared-interest; slices are [rows, cols], end exclusive.
VECTORS = [
    ((slice(0, 100), slice(0, 100)), (slice(50, 150), slice(50, 150)), 0.142857, 0.25, 0.25),
    ((slice(100, 250), slice(200, 250)), (slice(50, 250), slice(100, 250)), 0.25, 1.0, 0.25),
    ((slice(None), slice(None)), (slice(50, 100), slice(50, 100)), 0.04, 0.04, 1.0),
    ((slice(0, 1), slice(0, 1)), (slice(100, 150), slice(150, 250)), 0.0, 0.0, 0.0),
    ((slice(50, 100), slice(50, 100)), (slice(50, 100), slice(50, 100)), 1.0, 1.0, 1.0),
]
FILLS = [0.2, 0.5, 0.9, 0.1, 0.6]


def reference_regions() -> tuple[torch.Tensor, torch.Tensor]:
    ground_truth = torch.zeros(len(VECTORS), SIZE, SIZE, dtype=torch.bool)
    saliency = torch.zeros_like(ground_truth)
    for index, (g, s, *_) in enumerate(VECTORS):
        ground_truth[index][g] = True
        saliency[index][s] = True
    return saliency, ground_truth


def expected(column: int) -> torch.Tensor:
    return torch.tensor([row[column] for row in VECTORS])


# --- test vectors of docs/methods.md ---------------------------------------------------------


def test_reference_vectors_iou_gtc_sc() -> None:
    saliency, ground_truth = reference_regions()
    torch.testing.assert_close(iou(saliency, ground_truth), expected(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(ground_truth_coverage(saliency, ground_truth), expected(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(saliency_coverage(saliency, ground_truth), expected(4), atol=1e-6, rtol=0)


def test_reference_vectors_continuous_saliency_coverage() -> None:
    saliency, ground_truth = reference_regions()
    continuous = saliency.float() * torch.tensor(FILLS).view(-1, 1, 1)
    assert continuous.dtype == torch.float32
    torch.testing.assert_close(saliency_coverage(continuous, ground_truth), expected(4), atol=1e-6, rtol=0)


def test_continuous_saliency_coverage_weights_by_mass_and_uses_abs() -> None:
    # one row of 4 pixels, G = the first two; mass inside G = 1 + |-3| = 4 of total 4 + 2 + 2 = 8
    saliency = torch.tensor([[[1.0, -3.0, 2.0, -2.0]]])
    ground_truth = torch.tensor([[[True, True, False, False]]])
    assert saliency_coverage(saliency, ground_truth).item() == pytest.approx(0.5, abs=1e-7)
    # moving mass off the ground truth lowers it
    saliency = torch.tensor([[[1.0, 0.0, 6.0, 1.0]]])
    assert saliency_coverage(saliency, ground_truth).item() == pytest.approx(1 / 8, abs=1e-7)


def test_batch_size_invariance() -> None:
    saliency, ground_truth = reference_regions()
    continuous = saliency.float() * torch.tensor(FILLS).view(-1, 1, 1)
    for split in ([1, 1, 1, 1, 1], [2, 3]):
        for function, first in (
            (iou, saliency),
            (ground_truth_coverage, saliency),
            (saliency_coverage, saliency),
            (saliency_coverage, continuous),
        ):
            whole = function(first, ground_truth)
            parts = torch.cat(
                [function(a, b) for a, b in zip(first.split(split), ground_truth.split(split), strict=True)]
            )
            assert torch.equal(whole, parts), (function.__name__, split)


# --- undefined cases -------------------------------------------------------------------------


def test_empty_ground_truth_makes_gtc_undefined_not_zero() -> None:
    saliency = torch.zeros(1, 4, 4, dtype=torch.bool)
    saliency[0, 1, 1] = True
    ground_truth = torch.zeros_like(saliency)
    gtc = ground_truth_coverage(saliency, ground_truth)
    assert math.isnan(gtc.item())
    assert not defined(gtc).item()
    # the other two ratios are defined: nothing of S lies in the (empty) ground truth
    assert iou(saliency, ground_truth).item() == 0.0
    assert saliency_coverage(saliency, ground_truth).item() == 0.0


def test_empty_saliency_makes_sc_undefined_not_zero() -> None:
    ground_truth = torch.zeros(1, 4, 4, dtype=torch.bool)
    ground_truth[0, :2] = True
    saliency = torch.zeros_like(ground_truth)
    assert math.isnan(saliency_coverage(saliency, ground_truth).item())
    # the continuous form: a map with no mass at all
    assert math.isnan(saliency_coverage(torch.zeros(1, 4, 4), ground_truth).item())
    assert ground_truth_coverage(saliency, ground_truth).item() == 0.0
    assert iou(saliency, ground_truth).item() == 0.0


def test_both_empty_makes_everything_undefined() -> None:
    empty = torch.zeros(2, 3, 3, dtype=torch.bool)
    for function in (iou, ground_truth_coverage, saliency_coverage):
        scores = function(empty, empty)
        assert scores.shape == (2,)
        assert torch.isnan(scores).all(), function.__name__
        assert not defined(scores).any()


def test_undefined_sample_does_not_disturb_its_neighbours() -> None:
    saliency, ground_truth = reference_regions()
    saliency = torch.cat([saliency, torch.zeros(1, SIZE, SIZE, dtype=torch.bool)])
    ground_truth = torch.cat([ground_truth, torch.zeros(1, SIZE, SIZE, dtype=torch.bool)])
    scores = iou(saliency, ground_truth)
    assert defined(scores).tolist() == [True] * 5 + [False]
    torch.testing.assert_close(scores[:5], expected(2), atol=1e-6, rtol=0)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        iou(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ground_truth_coverage(torch.zeros(3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool))


def test_scores_are_float_vectors() -> None:
    saliency, ground_truth = reference_regions()
    for function in (iou, ground_truth_coverage, saliency_coverage):
        scores = function(saliency, ground_truth)
        assert scores.dtype == torch.float32 and scores.shape == (5,)


# --- aggregate (checks/aggregation.py): over defined values only -----------------------------------


def test_aggregate_ignores_undefined_values() -> None:
    values = torch.tensor([0.1, float("nan"), 0.3, 0.5, float("nan"), 0.9])
    assert aggregate(values, "mean") == pytest.approx(0.45)
    assert aggregate(values, "median") == pytest.approx(0.4)
    assert aggregate(values, "min") == pytest.approx(0.1)
    assert aggregate(values, "max") == pytest.approx(0.9)
    assert aggregate(values, "p0") == pytest.approx(0.1)
    assert aggregate(values, "p50") == pytest.approx(0.4)
    # linear interpolation, as numpy/torch quantile: position 0.1 * 3 = 0.3 -> 0.1 + 0.3 * 0.2
    assert aggregate(values, "p10") == pytest.approx(0.16)


def test_aggregate_of_nothing_defined_is_nan() -> None:
    assert math.isnan(aggregate(torch.tensor([float("nan"), float("nan")]), "mean"))
    assert math.isnan(aggregate(torch.tensor([]), "p90"))


# --- properties ------------------------------------------------------------------------------


@st.composite
def region_pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    saliency = draw(arrays(np.bool_, shape))
    ground_truth = draw(arrays(np.bool_, shape))
    return torch.from_numpy(saliency), torch.from_numpy(ground_truth)


PROPERTY = settings(max_examples=60, deadline=None)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


@PROPERTY
@given(region_pairs())
def test_scores_lie_in_unit_interval_where_defined(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    saliency, ground_truth = pair
    for function in (iou, ground_truth_coverage, saliency_coverage):
        scores = function(saliency, ground_truth)
        kept = scores[defined(scores)]
        assert ((kept >= 0) & (kept <= 1)).all(), function.__name__


@PROPERTY
@given(region_pairs())
def test_undefined_exactly_when_denominator_is_empty(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    saliency, ground_truth = pair
    s_empty = ~saliency.flatten(1).any(1)
    g_empty = ~ground_truth.flatten(1).any(1)
    assert torch.equal(~defined(ground_truth_coverage(saliency, ground_truth)), g_empty)
    assert torch.equal(~defined(saliency_coverage(saliency, ground_truth)), s_empty)
    assert torch.equal(~defined(iou(saliency, ground_truth)), s_empty & g_empty)


@PROPERTY
@given(region_pairs())
def test_iou_is_at_most_both_coverages(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    saliency, ground_truth = pair
    overlap = iou(saliency, ground_truth)
    for coverage in (ground_truth_coverage(saliency, ground_truth), saliency_coverage(saliency, ground_truth)):
        both = defined(overlap) & defined(coverage)
        assert (overlap[both] <= coverage[both]).all()


@PROPERTY
@given(region_pairs())
def test_iou_is_symmetric(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    saliency, ground_truth = pair
    _same(iou(saliency, ground_truth), iou(ground_truth, saliency))


@PROPERTY
@given(region_pairs())
def test_gtc_and_sc_swap_with_their_arguments(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    saliency, ground_truth = pair
    _same(ground_truth_coverage(saliency, ground_truth), saliency_coverage(ground_truth, saliency))


@PROPERTY
@given(region_pairs())
def test_identical_non_empty_regions_score_one(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    region, _ = pair
    region = region.clone()
    region[:, 0, 0] = True  # non-empty
    for function in (iou, ground_truth_coverage, saliency_coverage):
        assert torch.equal(function(region, region), torch.ones(region.shape[0])), function.__name__


@PROPERTY
@given(region_pairs(), st.floats(0.01, 100.0))
def test_continuous_sc_of_binary_map_equals_binary_sc(pair: tuple[torch.Tensor, torch.Tensor], scale: float) -> None:
    saliency, ground_truth = pair
    binary = saliency_coverage(saliency, ground_truth)
    continuous = saliency_coverage(saliency.float(), ground_truth)
    torch.testing.assert_close(continuous, binary, atol=1e-6, rtol=0, equal_nan=True)
    # positive scaling (and sign) of a continuous map does not change where its mass lies
    scaled = saliency_coverage(-scale * saliency.float(), ground_truth)
    torch.testing.assert_close(scaled, binary, atol=1e-6, rtol=0, equal_nan=True)


@PROPERTY
@given(region_pairs(), st.integers(1, 3))
def test_per_sample_values_do_not_depend_on_batching(pair: tuple[torch.Tensor, torch.Tensor], chunk: int) -> None:
    saliency, ground_truth = pair
    for function in (iou, ground_truth_coverage, saliency_coverage):
        whole = function(saliency, ground_truth)
        parts = torch.cat(
            [function(a, b) for a, b in zip(saliency.split(chunk), ground_truth.split(chunk), strict=True)]
        )
        _same(whole, parts)
