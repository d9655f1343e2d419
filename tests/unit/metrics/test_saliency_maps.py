"""From attributions to maps and regions: channel reductions, min-max normalisation, binarisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pytest_saliency.metrics.saliency import CHANNEL_REDUCTIONS, binarize, normalize_maps, reduce_channels

# one sample, two channels, a 1 x 3 image
ATTRIBUTIONS = torch.tensor([[[[1.0, -3.0, 2.0]], [[-2.0, 1.0, 1.0]]]])


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("sum", [-1.0, -2.0, 3.0]),
        ("abs_sum", [3.0, 4.0, 3.0]),  # abs before the channel sum
        ("max_abs", [2.0, 3.0, 2.0]),
        ("positive", [0.0, 0.0, 3.0]),  # positive part of the signed sum
    ],
)
def test_reduce_channels(reduction: str, expected: list[float]) -> None:
    maps = reduce_channels(ATTRIBUTIONS, reduction)  # type: ignore[arg-type]
    assert maps.shape == (1, 1, 3)
    assert maps[0, 0].tolist() == expected


def test_reduce_channels_default_is_abs_sum() -> None:
    assert torch.equal(reduce_channels(ATTRIBUTIONS), reduce_channels(ATTRIBUTIONS, "abs_sum"))
    assert set(CHANNEL_REDUCTIONS) == {"sum", "abs_sum", "max_abs", "positive"}


def test_reduce_channels_treats_three_dims_as_one_channel() -> None:
    maps = torch.tensor([[[1.0, -2.0], [0.5, -0.5]]])
    assert torch.equal(reduce_channels(maps, "sum"), maps)
    assert torch.equal(reduce_channels(maps, "abs_sum"), maps.abs())
    assert torch.equal(reduce_channels(maps, "positive"), maps.clamp(min=0))


def test_reduce_channels_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown channel reduction 'mean'"):
        reduce_channels(ATTRIBUTIONS, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        reduce_channels(torch.zeros(2, 3))


# --- normalisation ---------------------------------------------------------------------------


def test_normalize_maps_to_unit_range_per_map() -> None:
    maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[-1.0, 0.0], [1.0, 0.0]]])
    normalised, defined = normalize_maps(maps)
    assert defined.tolist() == [True, True]
    torch.testing.assert_close(normalised[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    torch.testing.assert_close(normalised[1], torch.tensor([[0.0, 0.5], [1.0, 0.5]]))


def test_normalize_constant_map_is_undefined_and_zero() -> None:
    maps = torch.stack([torch.full((3, 3), 7.0), torch.arange(9.0).view(3, 3), torch.zeros(3, 3)])
    normalised, defined = normalize_maps(maps)
    assert defined.tolist() == [False, True, False]
    assert not torch.isnan(normalised).any()
    assert torch.equal(normalised[0], torch.zeros(3, 3))
    assert torch.equal(normalised[2], torch.zeros(3, 3))
    assert normalised[1].min().item() == 0.0 and normalised[1].max().item() == 1.0


# --- binarisation ----------------------------------------------------------------------------


def as_map(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, -1)


def kept(region: torch.Tensor) -> list[bool]:
    return region.flatten().tolist()


def test_binarize_std_rule_uses_population_std() -> None:
    # mean 0.5667, population std 0.4190 -> cut 0.9857 keeps 1.0; the sample std (0.513) would
    # give a cut above 1 and keep nothing
    assert kept(binarize(as_map([0.0, 0.7, 1.0]), std=1.0)) == [False, False, True]
    values = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    for k in (0.0, 0.5, 1.0):
        cut = values.mean() + k * values.std()
        assert kept(binarize(as_map(values.tolist()), std=k)) == (values >= cut - 1e-7).tolist()
    assert kept(binarize(as_map(values.tolist()), std=0.5)) == [False] * 4 + [True] * 2


def test_binarize_std_rule_is_per_map() -> None:
    maps = torch.tensor([[[0.0, 0.0, 0.0, 1.0]], [[0.0, 1.0, 1.0, 1.0]]])
    region = binarize(maps, std=1.0)
    assert region.shape == maps.shape and region.dtype == torch.bool
    assert region[0].flatten().tolist() == [False, False, False, True]
    # mean 0.75, std 0.433: cut 1.18 keeps nothing in the second map
    assert region[1].flatten().tolist() == [False, False, False, False]


def test_binarize_percentile() -> None:
    values = as_map([i / 9 for i in range(10)])
    assert sum(kept(binarize(values, percentile=50))) == 5  # cut at 4.5/9, linear interpolation
    assert kept(binarize(values, percentile=90)) == [False] * 9 + [True]
    assert all(kept(binarize(values, percentile=0)))


def test_binarize_top_fraction_rounds_the_count_up() -> None:
    values = as_map([i / 9 for i in range(10)])
    assert kept(binarize(values, top_fraction=0.25)) == [False] * 7 + [True] * 3  # ceil(2.5) = 3
    assert sum(kept(binarize(values, top_fraction=0.3))) == 3
    # 0.07 * 100 is 7.000000000000001 in floating point: still 7 pixels, not 8
    assert sum(kept(binarize(as_map([i / 99 for i in range(100)]), top_fraction=0.07))) == 7
    assert sum(kept(binarize(values, top_fraction=0.2))) == 2
    assert sum(kept(binarize(values, top_fraction=0.001))) == 1  # at least one pixel
    assert sum(kept(binarize(values, top_fraction=1.0))) == 10


def test_binarize_top_fraction_keeps_ties_at_the_cut() -> None:
    values = as_map([0.9, 0.1, 0.9, 0.0, 0.9, 0.2])
    assert kept(binarize(values, top_fraction=0.1)) == [True, False, True, False, True, False]


def test_binarize_threshold_is_inclusive() -> None:
    values = as_map([0.0, 0.49, 0.5, 0.51, 1.0])
    assert kept(binarize(values, threshold=0.5)) == [False, False, True, True, True]


@pytest.mark.parametrize("rules", [{}, {"std": 1.0, "threshold": 0.5}, {"percentile": 90, "top_fraction": 0.1}])
def test_binarize_needs_exactly_one_rule(rules: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="exactly one rule"):
        binarize(as_map([0.0, 1.0]), **rules)


@settings(max_examples=50, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(0, 1, width=32),
    ),
    st.floats(0.01, 1.0),
)
def test_top_fraction_keeps_at_least_its_share(maps: np.ndarray, fraction: float) -> None:
    tensor = torch.from_numpy(maps)
    region = binarize(tensor, top_fraction=fraction)
    pixels = maps.shape[1] * maps.shape[2]
    counts = region.flatten(1).sum(1)
    assert (counts >= min(pixels, math.ceil(fraction * pixels - 1e-9))).all()
    # every kept value is at least every dropped value of the same map
    for sample in range(maps.shape[0]):
        inside, outside = tensor[sample][region[sample]], tensor[sample][~region[sample]]
        if inside.numel() and outside.numel():
            assert inside.min() >= outside.max()
