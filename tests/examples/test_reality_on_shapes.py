"""The reality checks on the shipped models (``examples/reality.saliency.yaml``): gradients of the
clean model fall on the shapes, the decoy-trained model's do not, a random map scores chance."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from examples.shapes.evaluate import gradient_maps, validation_set
from examples.shapes.model import load
from examples.shapes.train import EXAMPLE_DIR
from pytest_saliency.metrics import complexity, localisation
from pytest_saliency.metrics.saliency import reduce_channels

ROOT = Path(__file__).resolve().parents[2]


def maps_of(weights: str) -> tuple[torch.Tensor, torch.Tensor]:
    model, val = load(EXAMPLE_DIR / weights).eval(), validation_set()
    return reduce_channels(gradient_maps(model, val["images"], val["labels"])), val["masks"]


def test_localisation_separates_the_clean_model_from_the_decoy_model_and_from_noise() -> None:
    clean, masks = maps_of("clean.pt")
    decoy, _ = maps_of("decoy.pt")
    noise = torch.rand(clean.shape, generator=torch.Generator().manual_seed(0))
    auc = {
        name: float(localisation.auc(maps, masks).nanmean())
        for name, maps in (("clean", clean), ("decoy", decoy), ("noise", noise))
    }
    assert auc["clean"] > 0.8 and auc["decoy"] < 0.6 and abs(auc["noise"] - 0.5) < 0.02, auc
    hits = {
        name: float(localisation.pointing_game(maps, masks, tolerance=0).nanmean())
        for name, maps in (("clean", clean), ("decoy", decoy))
    }
    assert hits["clean"] > 0.35 > 0.05 > hits["decoy"], hits
    assert float(complexity.sparseness(clean).mean()) > float(complexity.sparseness(noise).mean()) + 0.4


def test_the_reality_example_spec_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/reality.saliency.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b8 passed in\b", result.stdout), result.stdout[-3000:]
