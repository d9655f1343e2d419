"""Train the shipped detector and segmenter pairs and write the validation set.

``python -m examples.objects.train [--out DIR] [--epochs N]`` writes to ``DIR`` (default: this
folder):

- ``detector_clean.pt`` / ``detector_decoy.pt``: :func:`~examples.objects.model.build_detector`
  trained on ``decoy="random"`` / ``decoy="label"`` images (the patch beside each object encodes
  its class: a shortcut);
- ``segmenter_clean.pt`` / ``segmenter_decoy.pt``: the same for
  :func:`~examples.objects.model.build_segmenter`;
- ``val.npz``: held-out images with ``decoy="random"``, where the shortcut no longer works.

Each pair sees the same images (differing only in the patches' grey levels), starts from the same
weights and draws the same batches; everything is seeded and runs on one CPU thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.objects.data import make_objects, save_npz
from examples.objects.model import STRIDE, Detector, build_detector, build_segmenter
from examples.shapes.data import DecoyMode

EXAMPLE_DIR = Path(__file__).resolve().parent
TRAIN_SEED, VAL_SEED = 0, 1
TRAIN_SIZE, VAL_SIZE = 1500, 64
EPOCHS = 8
BATCH = 32


def detection_targets(arrays: dict[str, np.ndarray], cells: int) -> tuple[Tensor, Tensor, Tensor]:
    """CenterNet targets: ``(N, 3, h, w)`` Gaussian heatmaps peaking at 1 on each object's centre
    cell, ``(N, 2, h, w)`` box sizes / STRIDE and ``(N, h, w) bool`` the centre cells."""
    n = len(arrays["images"])
    heat = torch.zeros(n, 3, cells, cells)
    size = torch.zeros(n, 2, cells, cells)
    centre = torch.zeros(n, cells, cells, dtype=torch.bool)
    ys, xs = torch.meshgrid(torch.arange(cells).float(), torch.arange(cells).float(), indexing="ij")
    for box, label, image in zip(arrays["boxes"], arrays["box_labels"], arrays["box_images"], strict=True):
        cx, cy = (box[0] + box[2]) / 2 / STRIDE, (box[1] + box[3]) / 2 / STRIDE
        x, y = int(cx), int(cy)
        gaussian = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 0.8**2))
        heat[image, label] = torch.maximum(heat[image, label], gaussian)
        size[image, :, y, x] = torch.tensor([box[2] - box[0], box[3] - box[1]]) / STRIDE
        centre[image, y, x] = True
    return heat, size, centre


def detection_loss(model: Detector, images: Tensor, heat: Tensor, size: Tensor, centre: Tensor) -> Tensor:
    """CenterNet's focal loss on the heatmap plus the L1 loss of the sizes at the centres."""
    logits, predicted_size = model.heads(images)
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = heat == 1
    focal = torch.where(
        positive, (1 - p) ** 2 * torch.log(p), (1 - heat) ** 4 * p**2 * torch.log(1 - p)
    ).sum() / positive.sum().clamp(min=1)
    mask = centre.unsqueeze(1).expand_as(size)
    return -focal + 0.1 * F.l1_loss(predicted_size[mask], size[mask])


def train(
    model: nn.Module, count: int, loss_of: Callable[[nn.Module, Tensor], Tensor], epochs: int, seed: int = 0
) -> None:
    """Adam on ``loss_of(model, rows)`` over batches of the ``count`` training images, shuffled by
    a generator seeded with ``seed``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    shuffler = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(count, generator=shuffler)
        for start in range(0, count, BATCH):
            loss: Tensor = loss_of(model, order[start : start + BATCH])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def train_detector(arrays: dict[str, np.ndarray], epochs: int) -> nn.Module:
    """A detector trained on ``arrays`` (:func:`~examples.objects.data.make_objects`)."""
    images = torch.from_numpy(arrays["images"])
    heat, size, centre = detection_targets(arrays, images.shape[-1] // STRIDE)
    torch.manual_seed(0)
    detector = build_detector()

    def loss_of(model: nn.Module, rows: Tensor) -> Tensor:
        assert isinstance(model, Detector)
        return detection_loss(model, images[rows], heat[rows], size[rows], centre[rows])

    train(detector, len(images), loss_of, epochs)
    return detector


def train_segmenter(arrays: dict[str, np.ndarray], epochs: int) -> nn.Module:
    """A segmenter trained on ``arrays`` (cross-entropy over the class-index masks)."""
    images, classes = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["masks"])
    torch.manual_seed(0)
    segmenter = build_segmenter()
    train(segmenter, len(images), lambda model, rows: F.cross_entropy(model(images[rows]), classes[rows]), epochs)
    return segmenter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLE_DIR)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # faster than two threads for these small networks, and machine-independent
    save_npz(args.out / "val.npz", make_objects(VAL_SIZE, VAL_SEED, decoy="random"))
    pairs: tuple[tuple[DecoyMode, str], ...] = (("random", "clean"), ("label", "decoy"))
    for decoy, name in pairs:
        arrays = make_objects(TRAIN_SIZE, TRAIN_SEED, decoy=decoy)
        started = time.perf_counter()
        torch.save(train_detector(arrays, args.epochs).state_dict(), args.out / f"detector_{name}.pt")
        middle = time.perf_counter()
        torch.save(train_segmenter(arrays, args.epochs).state_dict(), args.out / f"segmenter_{name}.pt")
        print(f"{name}: detector {middle - started:.0f} s, segmenter {time.perf_counter() - middle:.0f} s")


if __name__ == "__main__":
    main()
