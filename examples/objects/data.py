"""Synthetic multi-object shapes: two coloured circles, squares or triangles per image, each with a
4×4 grey decoy patch beside it, for the detection and segmentation examples.

The image (48×48) is four 24×24 quadrants; two of them hold one shape each (the same drawing as
``examples.shapes``). A patch sits just left of each shape: with ``decoy="label"`` its grey level
(``1.0 - 0.4·label``) gives the shape's class away, with ``decoy="random"`` the level is drawn
independently. Everything comes from a numpy seed; nothing is downloaded.

Arrays (``make_objects``): ``images (N, 3, 48, 48)`` float32 in [0, 1]; per object ``boxes (M, 4)``
x1, y1, x2, y2 in pixels, ``box_labels (M,)`` (0 circle, 1 square, 2 triangle), ``box_images (M,)``;
``masks (N, 48, 48)`` class indices for segmentation (0 background, 1 + the shape's class);
``decoy (N, 48, 48) bool`` the patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.shapes.data import CLASSES, DecoyMode, _backgrounds, _shape_colours, _shape_masks, decoy_levels

SIZE = 48
QUADRANT = 24
OBJECTS_PER_IMAGE = 2
PATCH = 4
SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *CLASSES)


def make_objects(n: int, seed: int, decoy: DecoyMode = "random") -> dict[str, np.ndarray]:
    """``n`` images with two objects each, deterministic given ``seed`` (module docs); the same
    seed gives the same shapes and backgrounds for every ``decoy`` mode."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    m = n * OBJECTS_PER_IMAGE
    quadrants = np.stack([rng.permutation(4)[:OBJECTS_PER_IMAGE] for _ in range(n)]).reshape(-1)
    origin = np.stack([(quadrants // 2) * QUADRANT, (quadrants % 2) * QUADRANT], axis=1).astype(np.float64)
    labels = rng.integers(0, len(CLASSES), size=m)
    half = rng.uniform(4.5, 6.5, size=m)
    centres = origin + np.stack([rng.uniform(8, 16, size=m), rng.uniform(12, 17, size=m)], axis=1)
    shapes = _shape_masks(labels, centres, half, grid)  # (M, H, W)
    backgrounds = _backgrounds(rng, n, SIZE, grid)
    colours = _shape_colours(rng, np.repeat(backgrounds.mean(axis=(2, 3)), OBJECTS_PER_IMAGE, axis=0))
    noise = rng.normal(0.0, 0.04, size=(m, 3, SIZE, SIZE))
    random_levels = decoy_levels(rng.integers(0, len(CLASSES), size=m))
    levels = decoy_levels(labels) if decoy == "label" else random_levels
    ys, xs = grid - 0.5
    top = np.round(centres[:, 0] - PATCH / 2)[:, None, None]
    left = np.floor(centres[:, 1] - half - 1 - PATCH)[:, None, None]
    patches = (ys >= top) & (ys < top + PATCH) & (xs >= left) & (xs < left + PATCH)
    images = backgrounds
    image_of = np.repeat(np.arange(n), OBJECTS_PER_IMAGE)
    masks = np.zeros((n, SIZE, SIZE), dtype=np.int64)
    decoys = np.zeros((n, SIZE, SIZE), dtype=bool)
    for obj in range(m):  # two objects per image: a loop over objects, not pixels
        i = image_of[obj]
        drawn = np.where(shapes[obj][None], colours[obj][:, None, None] + noise[obj], images[i])
        images[i] = np.where(patches[obj][None], levels[obj], drawn) if decoy != "none" else drawn
        masks[i][shapes[obj]] = labels[obj] + 1
        decoys[i] |= patches[obj] & (decoy != "none")
    boxes = np.stack([centres[:, 1] - half, centres[:, 0] - half, centres[:, 1] + half, centres[:, 0] + half], axis=1)
    images = np.round(np.clip(images, 0.0, 1.0) * 255) / 255
    return {
        "images": images.astype(np.float32),
        "boxes": boxes.astype(np.float32),
        "box_labels": labels.astype(np.int64),
        "box_images": image_of.astype(np.int64),
        "masks": masks,
        "decoy": decoys,
    }


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays with ``np.savez_compressed`` (images as ``float16``, masks as ``uint8``)."""
    np.savez_compressed(
        path,
        images=arrays["images"].astype(np.float16),
        boxes=arrays["boxes"],
        box_labels=arrays["box_labels"],
        box_images=arrays["box_images"],
        masks=arrays["masks"].astype(np.uint8),
        decoy=arrays["decoy"],
    )
