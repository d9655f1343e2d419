"""Measure the shipped shapes models: the numbers of the README's remedies table.

``python -m examples.shapes.evaluate [--dir DIR]`` loads ``clean.pt``, ``decoy.pt``, ``cdep.pt``
and ``saliency_guided.pt`` from ``DIR`` (default: this folder), measures each on ``val.npz``
(256 held-out images whose decoy patch carries no label) and prints a Markdown table:

- **accuracy**: the fraction of ``val.npz`` classified correctly (decoy-free accuracy: the
  patch's grey level is unrelated to the label there, so a model that reads it guesses);
- **decoy share**: mean over the images of the contextual-decomposition share of the decoy patch
  in the label's logit, ``β_t / (|β_t| + |γ_t|)`` (:func:`pytest_saliency.metrics.region.cd_region_scores`,
  exactly what a ``region`` check with ``mask: decoy`` measures);
- **GTC**: mean Shared Interest ground-truth coverage of vanilla-gradient saliency (captum
  ``Saliency``, abs, label as target, channels ``abs_sum``, binarised at mean + 1 std), exactly
  what the specs' ``object-coverage`` check measures for ``grad``;
- **fidelity gap**: mean AUC(LIF) − mean AUC(MIF) of the same gradient maps, tracking the softmax
  probability of the class predicted on the clean image
  (:func:`pytest_saliency.metrics.fidelity.fidelity_curves`), with its 95 % half-width, under the
  two removals of :data:`FIDELITY`: ``zeros`` (single pixels set to 0, 20 steps: close to the
  masking saliency guided training learns from, and Brocki & Chung's fill) and ``blur`` (2x2
  patches replaced by a blurred copy, 10 steps: the ``faithful`` check of
  ``specs/shapes.saliency.yaml``).

Everything is deterministic on the CPU; ``tests/examples/test_remedies.py`` checks the README's
table against these functions.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from captum.attr import Saliency
from torch import Tensor, nn

from examples.shapes.data import load_npz
from examples.shapes.model import load
from examples.shapes.train import accuracy
from pytest_saliency.metrics.fidelity import fidelity_curves
from pytest_saliency.metrics.region import cd_region_scores
from pytest_saliency.metrics.saliency import binarize, normalize_maps, reduce_channels
from pytest_saliency.metrics.shared_interest import ground_truth_coverage

EXAMPLE_DIR = Path(__file__).resolve().parent

MODELS: tuple[tuple[str, str, str], ...] = (
    ("normal", "clean.pt", "decoy random"),
    ("decoy", "decoy.pt", "decoy = label"),
    ("CDEP", "cdep.pt", "decoy = label"),
    ("saliency-guided", "saliency_guided.pt", "decoy random"),
)
"""``(training method, weights file, training data)`` per table row."""

_COMMON = {"orders": ("mif", "lif"), "score": "probability", "channels": "abs_sum", "seed": 0}
FIDELITY: dict[str, dict[str, object]] = {
    "zeros": {"steps": 20, "fill": "zeros", "unit": 1, **_COMMON},
    "blur": {"steps": 10, "fill": "blur", "unit": 2, **_COMMON},
}
"""The fidelity columns: name -> keywords of ``fidelity_curves`` (``blur``: the ``faithful`` check)."""


@dataclass(frozen=True)
class Measured:
    """One row of the table."""

    method: str
    weights: str
    trained_on: str
    accuracy: float
    decoy_share: float
    gtc: float
    fidelity: dict[str, tuple[float, float]]
    """fidelity setting name -> (gap, 95 % half-width)."""

    def cells(self) -> list[str]:
        gaps = [f"{gap:.3f} ± {half:.3f}" for gap, half in self.fidelity.values()]
        return [
            self.method,
            f"`{self.weights}`",
            self.trained_on,
            f"{self.accuracy:.3f}",
            f"{self.decoy_share:.3f}",
            f"{self.gtc:.3f}",
            *gaps,
        ]


HEADER = [
    "training",
    "weights",
    "trained on",
    "accuracy (val.npz)",
    "decoy share (CD, mean)",
    "GTC (mean, grad)",
    "fidelity gap (grad, zeros)",
    "fidelity gap (grad, blur)",
]


def validation_set(directory: Path = EXAMPLE_DIR) -> dict[str, Tensor]:
    """``val.npz`` as tensors: images ``(N, 3, H, W)`` float32, masks/decoy ``(N, H, W)`` bool, labels."""
    return {key: torch.from_numpy(value) for key, value in load_npz(directory / "val.npz").items()}


def decoy_share(model: nn.Module, val: dict[str, Tensor]) -> float:
    """Mean CD share of the decoy patch in the label's logit (NaN samples left out)."""
    share = cd_region_scores(model, val["images"], val["decoy"], val["labels"])["share"]
    return float(share[~share.isnan()].double().mean())


def gradient_maps(model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    """``(N, 3, H, W)`` captum ``Saliency`` (abs) for ``target``, as the specs' ``grad`` method."""
    inputs = images.clone().requires_grad_(True)
    return Saliency(model).attribute(inputs, target=target, abs=True).detach()


@torch.no_grad()
def predictions(model: nn.Module, val: dict[str, Tensor]) -> Tensor:
    return model(val["images"]).argmax(dim=1)


def ground_truth_coverage_mean(maps: Tensor, val: dict[str, Tensor]) -> float:
    """Mean GTC with the specs' saliency settings (abs_sum, mean + 1 std); constant maps left out."""
    normalised, defined = normalize_maps(reduce_channels(maps, "abs_sum"))
    regions = binarize(normalised, std=1.0) & defined.view(-1, 1, 1)
    gtc = ground_truth_coverage(regions, val["masks"])[defined]
    return float(gtc[~gtc.isnan()].double().mean())


def fidelity_gap(model: nn.Module, maps: Tensor, val: dict[str, Tensor], setting: str) -> tuple[float, float]:
    """``(gap, 95 % half-width)`` of ``maps`` under ``FIDELITY[setting]``."""
    options = FIDELITY[setting]
    result = fidelity_curves(model, val["images"], maps, target=predictions(model, val), batch_size=256, **options)  # type: ignore[arg-type]
    return result.gap, result.gap_interval


def measure(
    model: nn.Module, val: dict[str, Tensor], method: str = "", weights: str = "", trained_on: str = ""
) -> Measured:
    """Every column for one model (in eval mode)."""
    model.eval()
    maps = gradient_maps(model, val["images"], val["labels"])
    return Measured(
        method=method,
        weights=weights,
        trained_on=trained_on,
        accuracy=accuracy(model, val["images"], val["labels"]),
        decoy_share=decoy_share(model, val),
        gtc=ground_truth_coverage_mean(maps, val),
        fidelity={name: fidelity_gap(model, maps, val, name) for name in FIDELITY},
    )


def measure_all(directory: Path = EXAMPLE_DIR, threads: int | None = 1) -> list[Measured]:
    """One :class:`Measured` per row of :data:`MODELS`, from the weights in ``directory``.

    Runs on ``threads`` CPU threads (default 1: these small batches gain little from more, and on
    a busy machine extra threads cost several times the time; ``None`` keeps torch's setting).
    The numbers do not depend on it beyond float rounding.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        val = validation_set(directory)
        torch.manual_seed(0)
        return [measure(load(directory / weights), val, method, weights, data) for method, weights, data in MODELS]
    finally:
        torch.set_num_threads(previous)


def markdown(rows: Sequence[Measured]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dir", type=Path, default=EXAMPLE_DIR, help="folder with the weights and val.npz (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    rows = measure_all(args.dir)
    print(markdown(rows))
    if any(math.isnan(row.decoy_share) for row in rows):
        print("\n(decoy share: every decoy mask is empty)")


if __name__ == "__main__":
    main()
