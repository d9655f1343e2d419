"""Models and data sets the scale benchmarks (``memory.py``, ``gpu.py``) name in their specs.

Everything is seeded and built in memory: the models have random weights, and every image is
generated from its index alone, so a data set of any size costs nothing to store and reads the
same samples in every process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Three 3x3 conv layers (16, 32, 32 channels) with ReLU and 2x2 max pooling, global average
    pooling and a linear layer: ``(N, in_channels, H, W)`` -> ``(N, classes)`` logits."""

    def __init__(self, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def small_cnn(classes: int = 10, seed: int = 0) -> nn.Module:
    """A :class:`SmallCNN` with weights drawn from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(classes).eval()


def resnet50(classes: int = 1000, seed: int = 0) -> nn.Module:
    """torchvision's ResNet-50, randomly initialised from ``seed`` (no download)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet50(weights=None, num_classes=classes).eval()


def resnet18(classes: int = 1000, seed: int = 0) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised from ``seed`` (no download)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None, num_classes=classes).eval()


class Shapes:
    """``count`` images of ``3 x size x size``, each made from its index alone: uniform noise with
    a filled square or disc of a class colour at a random place. A sample is ``(image (3, H, W)
    uint8, mask (H, W) bool, label)``, the mask being the shape and the label ``index % classes``."""

    def __init__(self, count: int, size: int = 224, classes: int = 10, seed: int = 0) -> None:
        self.count, self.size, self.classes, self.seed = count, size, classes, seed
        palette = np.random.default_rng(seed).integers(0, 256, size=(classes, 3), dtype=np.uint8)
        self.palette = palette
        self.rows, self.columns = np.ogrid[:size, :size]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, index))
        size = self.size
        image = rng.integers(0, 256, size=(3, size, size), dtype=np.uint8)
        label = index % self.classes
        radius = int(rng.integers(size // 8, size // 4 + 1))
        row, column = (int(value) for value in rng.integers(radius, size - radius, size=2))
        if rng.random() < 0.5:
            mask = (np.abs(self.rows - row) <= radius) & (np.abs(self.columns - column) <= radius)
        else:
            mask = (self.rows - row) ** 2 + (self.columns - column) ** 2 <= radius**2
        image[:, mask] = self.palette[label][:, None]
        return image, mask, label


def shapes(count: int, size: int = 224, classes: int = 10, seed: int = 0) -> Shapes:
    """The data factory of the benchmark specs (see :class:`Shapes`)."""
    return Shapes(count, size, classes, seed)


def write_npz(path: Path, count: int, size: int, classes: int = 10, seed: int = 0) -> None:
    """The same samples as :func:`shapes`, in an uncompressed ``.npz`` (images, masks, labels)."""
    data = Shapes(count, size, classes, seed)
    images = np.empty((count, 3, size, size), dtype=np.uint8)
    masks = np.empty((count, size, size), dtype=bool)
    labels = np.empty(count, dtype=np.int64)
    for index in range(count):
        images[index], masks[index], labels[index] = data[index]
    np.savez(path, images=images, masks=masks, labels=labels)


def write_jpeg_folder(
    folder: Path, count: int, width: int = 500, height: int = 375, classes: int = 10, seed: int = 0
) -> None:
    """``count`` JPEGs of ``width`` x ``height`` (Pascal VOC's typical 500 x 375) under
    ``folder/images``, each seeded noise with a box of its class colour, and the CSVs a
    ``data.folder`` reads: ``labels.csv`` (file,label) and ``boxes.csv`` (file,top,left,bottom,right)."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(seed).integers(0, 256, size=(classes, 3), dtype=np.uint8)
    labels, boxes = ["file,label"], ["file,top,left,bottom,right"]
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        label = index % classes
        box_height, box_width = (int(v) for v in rng.integers(height // 6, height // 2, size=2))
        top, left = int(rng.integers(0, height - box_height)), int(rng.integers(0, width - box_width))
        pixels[top : top + box_height, left : left + box_width] = palette[label]
        name = f"{index:06d}.jpg"
        Image.fromarray(pixels).save(images / name, quality=90)
        labels.append(f"{name},{label}")
        boxes.append(f"{name},{top},{left},{top + box_height},{left + box_width}")
    (folder / "labels.csv").write_text("\n".join(labels) + "\n")
    (folder / "boxes.csv").write_text("\n".join(boxes) + "\n")
