"""Synthetic shapes: coloured circles, squares and triangles on textured backgrounds.

The ground-truth mask of an image is the shape's pixels. An optional 4×4 grey decoy patch sits in
a random corner (Decoy-MNIST style): with ``decoy="label"`` its grey level encodes the label, so it
predicts the class perfectly; with ``decoy="random"`` the level is drawn independently of the
label. Shapes keep a margin from the border, so the corner patches never touch them.

Images are quantised to 8 bits (values ``k / 255``), like real photographs, which keeps the
``float16`` arrays written by ``save_npz`` small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
DECOY_SIZE = 4
"""Side of the square decoy patch, in pixels."""
SHAPE_MARGIN = DECOY_SIZE + 1
"""Smallest distance, in pixels, between a shape's bounding box and the image border."""
SHAPE_EXTENT = (0.25, 0.45)
"""Range of a shape's bounding-box side, as a fraction of the image side."""

DecoyMode = Literal["none", "label", "random"]


def decoy_levels(labels: np.ndarray) -> np.ndarray:
    """Grey level of the decoy patch for each class index: ``1.0 - 0.4 * label``, ``(N,) float32``."""
    return (1.0 - 0.4 * labels).astype(np.float32)


def _backgrounds(rng: np.random.Generator, n: int, size: int, grid: np.ndarray) -> np.ndarray:
    """Low-contrast stripes between two random colours plus pixel noise, ``(N, 3, size, size)``."""
    ys, xs = grid
    base = rng.uniform(0.25, 0.75, size=(n, 3, 1, 1))
    tint = rng.uniform(-0.15, 0.15, size=(n, 3, 1, 1))
    angle = rng.uniform(0.0, np.pi, size=(n, 1, 1))
    period = rng.uniform(3.0, 8.0, size=(n, 1, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1, 1))
    along = xs * np.cos(angle) + ys * np.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / period + phase)
    noise = rng.normal(0.0, 0.04, size=(n, 3, size, size))
    return base + tint * stripes[:, None] + noise


def _shape_colours(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """Random colours, each channel 0.25–0.5 away from the background's mean, ``(N, 3)``."""
    offset = rng.uniform(0.25, 0.5, size=background_mean.shape)
    sign = rng.choice([-1.0, 1.0], size=background_mean.shape)
    colours = background_mean + sign * offset
    flipped = background_mean - sign * offset
    return np.where((colours < 0.0) | (colours > 1.0), flipped, colours)


def _shape_masks(labels: np.ndarray, centres: np.ndarray, half_extents: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Pixels inside each shape, ``(N, size, size) bool``; pixel centres are at ``index + 0.5``."""
    ys, xs = grid
    dy = ys[None] - centres[:, 0, None, None]
    dx = xs[None] - centres[:, 1, None, None]
    half = half_extents[:, None, None]
    circle = dx**2 + dy**2 <= half**2
    square = np.maximum(np.abs(dx), np.abs(dy)) <= half
    # Upward triangle: apex at (dy, dx) = (−half, 0), base corners at (+half, ±half).
    triangle = (dy <= half) & (2.0 * np.abs(dx) <= dy + half)
    masks = np.zeros_like(circle)
    for index, class_masks in enumerate((circle, square, triangle)):
        masks[labels == index] = class_masks[labels == index]
    return masks


def _decoy_masks(corners: np.ndarray, size: int) -> np.ndarray:
    """4×4 patch in corner 0–3 (top-left, top-right, bottom-left, bottom-right), ``(N, size, size) bool``."""
    rows = np.arange(size)
    top = (corners < 2)[:, None]
    left = (corners % 2 == 0)[:, None]
    in_rows = np.where(top, rows[None] < DECOY_SIZE, rows[None] >= size - DECOY_SIZE)
    in_cols = np.where(left, rows[None] < DECOY_SIZE, rows[None] >= size - DECOY_SIZE)
    return in_rows[:, :, None] & in_cols[:, None, :]


def make_shapes(n: int, seed: int, size: int = 32, decoy: DecoyMode = "none") -> dict[str, np.ndarray]:
    """Generate ``n`` shape images, deterministic given ``seed``.

    Returns ``images`` ``(N, 3, size, size) float32`` in ``[0, 1]``, ``masks``
    ``(N, size, size) bool`` (the shape = ground truth), ``labels`` ``(N,) int64`` (index into
    ``CLASSES``) and ``decoy`` ``(N, size, size) bool`` (the patch; all False for ``"none"``).
    The same seed gives the same shapes and backgrounds for every ``decoy`` mode.
    """
    if decoy not in ("none", "label", "random"):
        raise ValueError(f"decoy must be 'none', 'label' or 'random', got {decoy!r}")
    if size < 4 * SHAPE_MARGIN:
        raise ValueError(f"size must be at least {4 * SHAPE_MARGIN}, got {size}")
    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5

    labels = rng.integers(0, len(CLASSES), size=n)
    half_extents = rng.uniform(*SHAPE_EXTENT, size=n) * size / 2
    low = SHAPE_MARGIN + half_extents[:, None]
    centres = low + rng.uniform(size=(n, 2)) * (size - 2 * low)
    masks = _shape_masks(labels, centres, half_extents, grid)

    backgrounds = _backgrounds(rng, n, size, grid)
    colours = _shape_colours(rng, backgrounds.mean(axis=(2, 3)))
    shape_noise = rng.normal(0.0, 0.04, size=backgrounds.shape)
    images = np.where(masks[:, None], colours[:, :, None, None] + shape_noise, backgrounds)

    corners = rng.integers(0, 4, size=n)
    random_levels = decoy_levels(rng.integers(0, len(CLASSES), size=n))
    if decoy == "none":
        decoy_masks = np.zeros((n, size, size), dtype=bool)
    else:
        decoy_masks = _decoy_masks(corners, size)
        levels = decoy_levels(labels) if decoy == "label" else random_levels
        images = np.where(decoy_masks[:, None], levels[:, None, None, None], images)

    images = np.round(np.clip(images, 0.0, 1.0) * 255) / 255
    return {
        "images": images.astype(np.float32),
        "masks": masks,
        "labels": labels.astype(np.int64),
        "decoy": decoy_masks,
    }


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``images`` (as ``float16`` in ``[0, 1]``), ``masks``, ``labels``, ``decoy`` with ``np.savez_compressed``."""
    np.savez_compressed(
        path,
        images=arrays["images"].astype(np.float16),
        masks=arrays["masks"].astype(bool),
        labels=arrays["labels"].astype(np.int64),
        decoy=arrays["decoy"].astype(bool),
    )


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by ``save_npz``; images come back ``(N, 3, H, W) float32`` in ``[0, 1]``."""
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in ("images", "masks", "labels", "decoy")}
    arrays["images"] = arrays["images"].astype(np.float32)
    return arrays
