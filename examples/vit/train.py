"""Train the shipped ViT pair on the shapes data.

``python -m examples.vit.train [--out DIR]`` writes to ``DIR`` (default: this folder):

- ``clean.pt``: :func:`examples.vit.models.build_hybrid` trained with ``decoy="random"`` (the
  patch is present but carries no label);
- ``decoy.pt``: the same network trained with ``decoy="label"`` (the patch's grey level gives the
  label away: a shortcut).

Both see the same training images (differing only in the patch's grey level), start from the
same initial weights and draw the same batches: AdamW with a linear warm-up then cosine decay,
label smoothing, the recipe that makes a small ViT train on a few thousand images. They are
measured on ``examples/shapes/val.npz`` (written by ``python -m examples.shapes.train``) and on
the same images with the patch encoding the label. Everything is seeded and
``torch.use_deterministic_algorithms(True)`` is on; training runs on one CPU thread, so the bytes
do not depend on the machine's core count. ``--only NAME ...`` trains one of the two;
``--epochs`` shortens the training (for quick checks; the shipped files use the defaults).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from examples.shapes.data import DecoyMode, load_npz, make_shapes
from examples.shapes.train import EXAMPLE_DIR as SHAPES_DIR
from examples.shapes.train import TRAIN_SEED, VAL_SEED, VAL_SIZE, Optimizing, accuracy, train_model
from examples.vit.models import build_hybrid

EXAMPLE_DIR = Path(__file__).resolve().parent
TRAIN_SIZE = 4000
EPOCHS = 20
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
WARMUP = 0.15
"""Share of the training steps over which the learning rate rises linearly from 0."""
LABEL_SMOOTHING = 0.1
DECOY_MODES: dict[str, DecoyMode] = {"clean": "random", "decoy": "label"}
"""Shipped model name -> the training data's ``decoy`` mode."""


def adamw_warmup_cosine(
    lr: float = LEARNING_RATE, weight_decay: float = WEIGHT_DECAY, warmup: float = WARMUP
) -> Optimizing:
    """AdamW at ``lr`` whose learning rate rises linearly over the first ``warmup`` share of the
    steps, then follows a cosine down to 0: the ``optimizing`` of :func:`train_model`."""

    def optimizing(model: nn.Module, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        rising = max(1, round(warmup * steps))

        def factor(step: int) -> float:
            if step < rising:
                return (step + 1) / rising
            return 0.5 * (1.0 + math.cos(math.pi * (step - rising) / max(1, steps - rising)))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    return optimizing


def train_named(
    name: str, epochs: int | None = None, train_size: int = TRAIN_SIZE, seed: int = TRAIN_SEED
) -> tuple[nn.Module, list[float]]:
    """Train the shipped model ``name`` (``clean`` or ``decoy``) from its initial weights, on one
    CPU thread; ``epochs`` and ``train_size`` shorten the run for quick checks, ``seed`` draws the
    initial weights and the batches. Returns the model (eval mode) and its epoch losses."""
    if name not in DECOY_MODES:
        raise ValueError(f"unknown model {name!r}; expected one of {tuple(DECOY_MODES)}")
    train = make_shapes(train_size, seed=TRAIN_SEED, decoy=DECOY_MODES[name])
    torch.manual_seed(seed)
    model = build_hybrid()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = train_model(
            model,
            torch.from_numpy(train["images"]),
            torch.from_numpy(train["labels"]),
            epochs=EPOCHS if epochs is None else epochs,
            seed=seed,
            optimizing=adamw_warmup_cosine(),
            label_smoothing=LABEL_SMOOTHING,
        )
    finally:
        torch.set_num_threads(threads)
    return model, losses


def validation_pair(directory: Path = SHAPES_DIR) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``val.npz`` (decoy random) and the same images with the patch encoding the label, as tensors."""
    random = {key: torch.from_numpy(value) for key, value in load_npz(directory / "val.npz").items()}
    label = {key: torch.from_numpy(value) for key, value in make_shapes(VAL_SIZE, seed=VAL_SEED, decoy="label").items()}
    return random, label


def accuracies(model: nn.Module, directory: Path = SHAPES_DIR) -> tuple[float, float]:
    """``model``'s accuracy on ``val.npz`` (decoy random) and on the same images with decoy = label."""
    random, label = validation_pair(directory)
    return accuracy(model, random["images"], random["labels"]), accuracy(model, label["images"], label["labels"])


def main(argv: Sequence[str] | None = None) -> None:
    """Train the pair and print each model's accuracies."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=EXAMPLE_DIR, help="output folder (default: %(default)s)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=tuple(DECOY_MODES),
        default=list(DECOY_MODES),
        help="models to train (default: both)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the training's epochs (quick checks)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    for name in [name for name in DECOY_MODES if name in args.only]:
        begun = time.perf_counter()
        model, losses = train_named(name, args.epochs)
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        on_random, on_label = accuracies(model)
        print(
            f"{name}.pt ({time.perf_counter() - begun:.0f} s): final train loss {losses[-1]:.3f}, "
            f"val accuracy {on_random:.3f} (decoy random), {on_label:.3f} (decoy = label)",
            flush=True,
        )
    print(f"done in {time.perf_counter() - started:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
