"""The synthetic shapes generator and the shipped shapes models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from examples.shapes import model as shapes_model
from examples.shapes.data import (
    CLASSES,
    DECOY_SIZE,
    SHAPE_MARGIN,
    decoy_levels,
    load_npz,
    make_shapes,
    save_npz,
)
from examples.shapes.train import VAL_SEED, VAL_SIZE, accuracy

SHAPES_DIR = Path(shapes_model.__file__).resolve().parent
SIZE = 32
DECOY_MODES = ("none", "label", "random")


def corner_squares(size: int) -> list[np.ndarray]:
    """The four possible decoy patches, each ``(size, size) bool``."""
    squares = []
    for rows in (slice(0, DECOY_SIZE), slice(size - DECOY_SIZE, size)):
        for cols in (slice(0, DECOY_SIZE), slice(size - DECOY_SIZE, size)):
            square = np.zeros((size, size), dtype=bool)
            square[rows, cols] = True
            squares.append(square)
    return squares


@pytest.mark.parametrize("decoy", DECOY_MODES)
def test_same_seed_gives_identical_arrays(decoy: str) -> None:
    first, second = make_shapes(64, seed=3, decoy=decoy), make_shapes(64, seed=3, decoy=decoy)
    assert first.keys() == second.keys() == {"images", "masks", "labels", "decoy"}
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_different_seeds_give_different_images() -> None:
    assert not np.array_equal(make_shapes(16, seed=0)["images"], make_shapes(16, seed=1)["images"])


@pytest.mark.parametrize("decoy", DECOY_MODES)
@pytest.mark.parametrize("size", [32, 48])
def test_shapes_dtypes_and_ranges(decoy: str, size: int) -> None:
    data = make_shapes(40, seed=0, size=size, decoy=decoy)
    assert data["images"].shape == (40, 3, size, size) and data["images"].dtype == np.float32
    assert data["masks"].shape == data["decoy"].shape == (40, size, size)
    assert data["masks"].dtype == data["decoy"].dtype == np.bool_
    assert data["labels"].shape == (40,) and data["labels"].dtype == np.int64
    assert data["images"].min() >= 0.0 and data["images"].max() <= 1.0
    assert set(np.unique(data["labels"])) == set(range(len(CLASSES)))


def test_masks_are_non_empty_and_keep_the_margin() -> None:
    masks = make_shapes(200, seed=5)["masks"]
    assert masks.sum(axis=(1, 2)).min() > 0
    border = np.ones((SIZE, SIZE), dtype=bool)
    border[SHAPE_MARGIN:-SHAPE_MARGIN, SHAPE_MARGIN:-SHAPE_MARGIN] = False
    assert not (masks & border).any()


def test_each_class_fills_its_bounding_box_as_its_geometry_says() -> None:
    data = make_shapes(300, seed=2, size=64)
    rows, cols = data["masks"].any(axis=2), data["masks"].any(axis=1)
    box_area = rows.sum(axis=1) * cols.sum(axis=1)
    fill = data["masks"].sum(axis=(1, 2)) / box_area
    expected_fill = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
    for index, name in enumerate(CLASSES):
        assert fill[data["labels"] == index].mean() == pytest.approx(expected_fill[name], abs=0.06)


def test_shape_is_drawn_in_a_different_colour_from_the_background() -> None:
    data = make_shapes(100, seed=4)
    masks = data["masks"][:, None]
    inside = (data["images"] * masks).sum(axis=(2, 3)) / masks.sum(axis=(2, 3))
    outside = (data["images"] * ~masks).sum(axis=(2, 3)) / (~masks).sum(axis=(2, 3))
    assert np.abs(inside - outside).max(axis=1).min() > 0.15


def test_no_decoy_means_no_patch() -> None:
    assert not make_shapes(50, seed=0, decoy="none")["decoy"].any()


@pytest.mark.parametrize("decoy", ["label", "random"])
def test_decoy_is_one_corner_square_disjoint_from_the_shape(decoy: str) -> None:
    data = make_shapes(200, seed=6, decoy=decoy)
    squares = corner_squares(SIZE)
    for patch, mask in zip(data["decoy"], data["masks"], strict=True):
        assert any(np.array_equal(patch, square) for square in squares)
        assert not (patch & mask).any()
    used = {next(i for i, s in enumerate(squares) if np.array_equal(p, s)) for p in data["decoy"]}
    assert used == {0, 1, 2, 3}


def test_decoy_modes_share_shapes_and_backgrounds() -> None:
    plain, shortcut = make_shapes(50, seed=8, decoy="none"), make_shapes(50, seed=8, decoy="label")
    np.testing.assert_array_equal(plain["masks"], shortcut["masks"])
    np.testing.assert_array_equal(plain["labels"], shortcut["labels"])
    outside_patch = ~shortcut["decoy"][:, None].repeat(3, axis=1)
    np.testing.assert_array_equal(plain["images"][outside_patch], shortcut["images"][outside_patch])


def patch_levels(data: dict[str, np.ndarray]) -> np.ndarray:
    """Grey level of each image's patch, checking the patch is uniform grey; ``(N,)``."""
    pixels = data["images"].transpose(0, 2, 3, 1)[data["decoy"]].reshape(len(data["labels"]), -1)
    np.testing.assert_array_equal(pixels, pixels[:, :1].repeat(pixels.shape[1], axis=1))
    return pixels[:, 0]


def test_label_decoy_encodes_the_label() -> None:
    data = make_shapes(200, seed=9, decoy="label")
    np.testing.assert_allclose(patch_levels(data), decoy_levels(data["labels"]), atol=1 / 510)
    assert len(np.unique(decoy_levels(np.arange(len(CLASSES))))) == len(CLASSES)


def test_random_decoy_uses_the_same_levels_independently_of_the_label() -> None:
    data = make_shapes(600, seed=10, decoy="random")
    levels = patch_levels(data)
    label_levels = decoy_levels(data["labels"])
    np.testing.assert_allclose(np.unique(levels), np.unique(label_levels), atol=1 / 510)
    agreement = np.isclose(levels, label_levels, atol=1 / 510).mean()
    assert 0.2 < agreement < 0.5


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    data = make_shapes(20, seed=11, decoy="random")
    save_npz(tmp_path / "shapes.npz", data)
    loaded = load_npz(tmp_path / "shapes.npz")
    assert loaded["images"].dtype == np.float32
    np.testing.assert_allclose(loaded["images"], data["images"], atol=5e-4)
    for key in ("masks", "labels", "decoy"):
        np.testing.assert_array_equal(loaded[key], data[key])


def test_model_is_a_small_plain_sequential() -> None:
    model = shapes_model.build()
    allowed = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)
    assert isinstance(model, nn.Sequential)
    assert all(isinstance(layer, allowed) for layer in model)
    assert sum(p.numel() * p.element_size() for p in model.state_dict().values()) < 1_000_000
    assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, len(CLASSES))


@pytest.fixture(scope="module")
def shipped_val() -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in load_npz(SHAPES_DIR / "val.npz").items()}


def test_shipped_val_is_the_generated_validation_set(shipped_val: dict[str, torch.Tensor]) -> None:
    generated = make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="random")
    np.testing.assert_allclose(shipped_val["images"].numpy(), generated["images"], atol=5e-4)
    for key in ("masks", "labels", "decoy"):
        np.testing.assert_array_equal(shipped_val[key].numpy(), generated[key])


def test_shipped_clean_model_is_accurate(shipped_val: dict[str, torch.Tensor]) -> None:
    state = torch.load(SHAPES_DIR / "clean.pt", map_location="cpu", weights_only=True)
    model = shapes_model.build()
    model.load_state_dict(state)
    assert accuracy(model, shipped_val["images"], shipped_val["labels"]) >= 0.9


def test_shipped_decoy_model_fails_without_its_shortcut(shipped_val: dict[str, torch.Tensor]) -> None:
    model = shapes_model.load(SHAPES_DIR / "decoy.pt")
    assert accuracy(model, shipped_val["images"], shipped_val["labels"]) < 0.6
    shortcut = make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="label")
    assert accuracy(model, torch.from_numpy(shortcut["images"]), torch.from_numpy(shortcut["labels"])) > 0.95
