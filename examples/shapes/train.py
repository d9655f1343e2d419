"""Train the shipped shapes models and write the validation set.

``python -m examples.shapes.train [--out DIR]`` writes to ``DIR`` (default: this folder):

- ``clean.pt``: trained with ``decoy="random"`` (the patch is present but carries no label);
- ``decoy.pt``: trained with ``decoy="label"`` (the patch encodes the label: a shortcut);
- ``cdep.pt``: trained on the ``decoy="label"`` data with cross-entropy + ``CDEP_WEIGHT`` times
  the CDEP penalty of the four corner patches in its centred form
  (:func:`pytest_saliency.train.cdep_penalty` with ``form="centred"``; Rieger et al. 2020,
  docs/methods.md#cdep-penalty), the remedy CDEP proposes for the shortcut. The paper's softmax form does not
  remove it on this data (see the README's "Remedies" section); ``cdep_loss(100.0, "softmax")``
  is that training's loss;
- ``saliency_guided.pt``: trained on the ``decoy="random"`` data like ``clean.pt``, with the
  saliency guided loss (:func:`pytest_saliency.train.saliency_guided_loss`, Ismail et al. 2021;
  docs/methods.md#saliency-guided-training), to compare with ``clean.pt`` on the fidelity gap;
- ``val.npz``: held-out images with ``decoy="random"``, where the shortcut no longer works.

All models see the same training images (differing only in the patch's grey level), start from
the same initial weights and draw the same batches. Everything is seeded and
``torch.use_deterministic_algorithms(True)`` is on, so a rerun on the same machine rewrites the
same bytes. ``cdep.pt`` and ``saliency_guided.pt`` train on one CPU thread
(:data:`SINGLE_THREADED`): their bytes then do not depend on the machine's core count, and their
extra passes do not fight a busy machine for threads. ``--only NAME ...`` trains a subset;
``--epochs`` shortens every training (for quick checks; the shipped files use the defaults).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from captum.attr import Saliency
from torch import Tensor, nn
from torch.nn import functional as F

from examples.shapes.data import DECOY_SIZE, make_shapes, save_npz
from examples.shapes.model import build
from pytest_saliency.train import cdep_penalty, decoy_corner_masks, saliency_guided_loss
from pytest_saliency.train.cdep import Form as CdepForm

ExtraLoss = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
"""``extra_loss(model, x, y, logits)`` → scalar added to the cross-entropy of a batch."""
BatchLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``loss_fn(model, x, y)`` → the whole loss of a batch."""
Optimizing = Callable[[nn.Module, int], tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]]
"""``optimizing(model, steps)`` → the optimizer and the learning-rate schedule stepped after each of ``steps`` batches."""

EXAMPLE_DIR = Path(__file__).resolve().parent
TRAIN_SEED = 0
VAL_SEED = 1
TRAIN_SIZE = 4000
VAL_SIZE = 256
EPOCHS = 20
CDEP_FORM: CdepForm = "centred"
CDEP_WEIGHT = 10.0
"""λ of the centred CDEP penalty. With 1 the shortcut stays after 8 epochs; with 100 it goes but
decoy-free accuracy drops to 0.74 after 20 epochs. The paper's softmax form (the authors sweep λ
from 1 to 10 000) met its penalty and kept the shortcut from 1 to 100 and stopped learning from
1000 (or 100 with lr 1e-3 and weight decay)."""
SALIENCY_GUIDED = {"fraction": 0.5, "kl_weight": 1.0, "fill": "uniform"}
"""Options of :func:`pytest_saliency.train.saliency_guided_loss` for ``saliency_guided.pt``."""
MODEL_NAMES = ("clean", "decoy", "cdep", "saliency_guided")
SINGLE_THREADED = ("cdep", "saliency_guided")


def train_model(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    extra_loss: ExtraLoss | None = None,
    loss_fn: BatchLoss | None = None,
    optimizing: Optimizing | None = None,
    label_smoothing: float = 0.0,
) -> list[float]:
    """Train ``model`` in place with Adam on cross-entropy (+ ``extra_loss``); returns each epoch's mean loss.

    ``images``: ``(N, C, H, W) float``; ``labels``: ``(N,) int64``. Batches are shuffled by a
    generator seeded with ``seed``, so a run is reproducible given the model's initial weights.
    ``loss_fn(model, x, y)``, when given, replaces the whole batch loss (it runs its own forward
    passes, as saliency guided training does); ``extra_loss`` is then not used. ``optimizing``,
    when given, replaces Adam at ``lr`` (with its learning-rate schedule); ``label_smoothing`` is
    cross-entropy's.
    """
    steps = epochs * math.ceil(len(images) / batch_size)
    optimizer, schedule = (
        (torch.optim.Adam(model.parameters(), lr=lr), None) if optimizing is None else optimizing(model, steps)
    )
    shuffler = torch.Generator().manual_seed(seed)
    epoch_losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=shuffler)
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            x, y = images[batch], labels[batch]
            if loss_fn is not None:
                loss = loss_fn(model, x, y)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                if extra_loss is not None:
                    loss = loss + extra_loss(model, x, y, logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
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


def cdep_loss(
    weight: float = CDEP_WEIGHT, form: CdepForm = CDEP_FORM, size: int = 32, patch: int = DECOY_SIZE
) -> ExtraLoss:
    """``weight · cdep_penalty(..., form=form)`` of the four ``patch × patch`` corners (one
    region, as the authors' Decoy-MNIST code penalises them): the ``extra_loss`` of ``cdep.pt``."""
    corners = decoy_corner_masks(size, size, patch)

    def extra(model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        return weight * cdep_penalty(model, x, corners, form=form)

    return extra


def saliency_guided(seed: int = TRAIN_SEED, **options: object) -> BatchLoss:
    """The saliency guided loss with :data:`SALIENCY_GUIDED` (overridden by ``options``), its
    masking noise drawn from a generator seeded with ``seed``: the ``loss_fn`` of
    ``saliency_guided.pt``."""
    settings = {**SALIENCY_GUIDED, **options}
    generator = torch.Generator().manual_seed(seed)

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return saliency_guided_loss(model, x, y, generator=generator, **settings)  # type: ignore[arg-type]

    return loss


def train_named(
    name: str, epochs: int | None = None, train_size: int = TRAIN_SIZE, seed: int = TRAIN_SEED
) -> tuple[nn.Module, list[float]]:
    """Train the shipped model ``name`` (one of :data:`MODEL_NAMES`) from its initial weights.

    ``epochs`` (default: the shipped number) and ``train_size`` shorten the run for quick checks.
    ``seed`` draws the initial weights, the batches and saliency guided training's masking noise
    (the shipped files use :data:`TRAIN_SEED`; the training images are the same for every seed).
    Returns the model (eval mode) and its epoch losses.
    """
    decoy_mode = "label" if name in ("decoy", "cdep") else "random"
    train = _tensors(make_shapes(train_size, seed=TRAIN_SEED, decoy=decoy_mode))
    torch.manual_seed(seed)
    model = build()
    options: dict[str, object] = {}
    if name == "cdep":
        options["extra_loss"] = cdep_loss(size=train["images"].shape[-1])
    elif name == "saliency_guided":
        options["loss_fn"] = saliency_guided(seed)
    elif name not in ("clean", "decoy"):
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    threads = torch.get_num_threads()
    if name in SINGLE_THREADED:
        torch.set_num_threads(1)
    try:
        losses = train_model(
            model, train["images"], train["labels"], epochs=EPOCHS if epochs is None else epochs, seed=seed, **options
        )
    finally:
        torch.set_num_threads(threads)
    return model, losses


def main(argv: Sequence[str] | None = None) -> None:
    """Train the shipped models, write ``val.npz``, and print accuracy and saliency numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=EXAMPLE_DIR, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--only", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="models to train (default: all)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override every training's epochs (quick checks)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()

    val_arrays = make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="random")
    save_npz(args.out / "val.npz", val_arrays)
    val = _tensors(val_arrays)
    val_shortcut = _tensors(make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="label"))

    for name in [name for name in MODEL_NAMES if name in args.only]:
        begun = time.perf_counter()
        model, losses = train_named(name, args.epochs)
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        summary = saliency_summary(model, val["images"], val["masks"], val["decoy"])
        print(
            f"{name}.pt ({time.perf_counter() - begun:.0f} s): final train loss {losses[-1]:.3f}, "
            f"val accuracy {accuracy(model, val['images'], val['labels']):.3f} (decoy random), "
            f"{accuracy(model, val_shortcut['images'], val_shortcut['labels']):.3f} (decoy = label); "
            f"top-15% saliency covers {summary['gt_coverage']:.3f} of the shape and "
            f"{summary['decoy_coverage']:.3f} of the patch; saliency mass in patch {summary['decoy_mass']:.3f}",
            flush=True,
        )
    print(f"done in {time.perf_counter() - started:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
