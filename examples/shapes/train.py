"""Train the shipped shapes models and write the validation set.

``python -m examples.shapes.train [--out DIR]`` writes to ``DIR`` (default: this folder):

- ``clean.pt``: trained with ``decoy="random"`` (the patch is present but carries no label);
- ``decoy.pt``: trained with ``decoy="label"`` (the patch encodes the label: a shortcut);
- ``val.npz``: held-out images with ``decoy="random"``, where the shortcut no longer works.

Both models see the same training images, which differ only in the patch's grey level.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from captum.attr import Saliency
from torch import Tensor, nn
from torch.nn import functional as F

from examples.shapes.data import make_shapes, save_npz
from examples.shapes.model import build

ExtraLoss = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
"""``extra_loss(model, x, y, logits)`` → scalar added to the cross-entropy of a batch."""

EXAMPLE_DIR = Path(__file__).resolve().parent
TRAIN_SEED = 0
VAL_SEED = 1
TRAIN_SIZE = 4000
VAL_SIZE = 256
EPOCHS = 20


def train_model(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    extra_loss: ExtraLoss | None = None,
) -> list[float]:
    """Train ``model`` in place with Adam on cross-entropy (+ ``extra_loss``); returns each epoch's mean loss.

    ``images``: ``(N, C, H, W) float``; ``labels``: ``(N,) int64``. Batches are shuffled by a
    generator seeded with ``seed``, so a run is reproducible given the model's initial weights.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffler = torch.Generator().manual_seed(seed)
    epoch_losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=shuffler)
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            x, y = images[batch], labels[batch]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model, x, y, logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epoch_losses.append(total / len(images))
    model.eval()
    return epoch_losses


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``(N, C, H, W)`` images whose predicted class equals ``labels`` ``(N,)``."""
    model.eval()
    return (model(images).argmax(dim=1) == labels).float().mean().item()


def saliency_summary(
    model: nn.Module, images: Tensor, masks: Tensor, decoy: Tensor, top_fraction: float = 0.15
) -> dict[str, float]:
    """Where vanilla-gradient saliency (abs, summed over channels, predicted class) falls.

    ``masks`` and ``decoy`` are ``(N, H, W) bool``. Returns the mean over images of
    ``gt_coverage`` (share of the shape's pixels among the top ``top_fraction`` salient pixels),
    ``decoy_coverage`` (the same for the decoy patch's pixels) and ``decoy_mass`` (share of the
    total saliency inside the decoy patch).
    """
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    inputs = images.clone().requires_grad_(True)
    maps = Saliency(model).attribute(inputs, target=predicted, abs=True).sum(dim=1).flatten(1)
    count = round(top_fraction * maps.shape[1])
    top = torch.zeros_like(maps, dtype=torch.bool).scatter_(1, maps.topk(count, dim=1).indices, True)
    shape, patch = masks.flatten(1), decoy.flatten(1)
    return {
        "gt_coverage": ((top & shape).sum(dim=1) / shape.sum(dim=1)).mean().item(),
        "decoy_coverage": ((top & patch).sum(dim=1) / patch.sum(dim=1)).mean().item(),
        "decoy_mass": ((maps * patch).sum(dim=1) / maps.sum(dim=1)).mean().item(),
    }


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, Tensor]:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """Train ``clean.pt`` and ``decoy.pt``, write ``val.npz``, and print accuracy and saliency numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=EXAMPLE_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()

    val_arrays = make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="random")
    save_npz(args.out / "val.npz", val_arrays)
    val = _tensors(val_arrays)
    val_shortcut = _tensors(make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="label"))

    for name, decoy_mode in (("clean", "random"), ("decoy", "label")):
        train = _tensors(make_shapes(TRAIN_SIZE, seed=TRAIN_SEED, decoy=decoy_mode))
        torch.manual_seed(TRAIN_SEED)
        model = build()
        losses = train_model(model, train["images"], train["labels"], epochs=EPOCHS, seed=TRAIN_SEED)
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        summary = saliency_summary(model, val["images"], val["masks"], val["decoy"])
        print(
            f"{name}.pt: final train loss {losses[-1]:.3f}, "
            f"val accuracy {accuracy(model, val['images'], val['labels']):.3f} (decoy random), "
            f"{accuracy(model, val_shortcut['images'], val_shortcut['labels']):.3f} (decoy = label); "
            f"top-15% saliency covers {summary['gt_coverage']:.3f} of the shape and "
            f"{summary['decoy_coverage']:.3f} of the patch; saliency mass in patch {summary['decoy_mass']:.3f}"
        )
    print(f"done in {time.perf_counter() - started:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
