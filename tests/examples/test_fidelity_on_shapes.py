"""The fidelity check's sanity check on the shipped model: a random attribution has no gap, and
vanilla gradients have a clearly larger one (``specs/shapes.saliency.yaml``, ``faithful``)."""

from __future__ import annotations

import torch

from examples.shapes.evaluate import gradient_maps, predictions, validation_set
from examples.shapes.model import load
from examples.shapes.train import EXAMPLE_DIR
from pytest_saliency.metrics.fidelity import fidelity_curves

SETTINGS = {"steps": 10, "fill": "blur", "unit": 2, "orders": ("mif", "lif", "random"), "batch_size": 256}


def test_random_attribution_has_no_gap_and_gradients_do_on_the_shipped_model() -> None:
    model, val = load(EXAMPLE_DIR / "clean.pt").eval(), validation_set()
    target = predictions(model, val)
    noise = torch.rand(val["images"].shape[0], 32, 32, generator=torch.Generator().manual_seed(0))
    random = fidelity_curves(model, val["images"], noise, target=target, **SETTINGS)
    grad = fidelity_curves(
        model, val["images"], gradient_maps(model, val["images"], val["labels"]), target=target, **SETTINGS
    )
    assert abs(random.gap) <= random.gap_interval, (random.gap, random.gap_interval)
    assert grad.gap - grad.gap_interval > random.gap + random.gap_interval + 0.3, (grad.gap, random.gap)
    # The random order is a reference curve between the two: MIF falls faster, LIF slower.
    assert grad.mean_auc("mif") < grad.mean_auc("random") < grad.mean_auc("lif")
