"""How far the quick retraining's effects hold across seeds: the margins behind the assertions of
``tests/examples/test_remedies.py::test_quick_retraining_shows_the_direction_of_each_effect``.

Training trajectories differ between machines (thread counts, CPU kernels), so that test asserts
only effects whose margin stays large whatever the trajectory. A seed here stands for another
trajectory: it draws other initial weights, batches and masking noise on the same images.
``python -m examples.shapes.margins --seeds 0 1 2 3 4`` retrains the four models for each seed
(normal and decoy fully, the remedies for ``QUICK_EPOCHS``) and prints each margin per seed and
its minimum; the test quotes a run beside its assertions.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from examples.shapes.evaluate import Measured, measure, validation_set
from examples.shapes.train import CDEP_FORM, train_named
from pytest_saliency.train import cdep_penalty, decoy_corner_masks

QUICK_EPOCHS = 8
"""Epochs of the remedies in the quick retraining (the shipped files use 20)."""


def corner_penalty(model: torch.nn.Module, images: torch.Tensor) -> float:
    """The centred CDEP penalty of the four corners: the quantity CDEP training minimises."""
    with torch.no_grad():
        corners = decoy_corner_masks(images.shape[-2], images.shape[-1], 4)
        return float(cdep_penalty(model.eval(), images, corners, form=CDEP_FORM))


def quick_retraining(seed: int) -> tuple[dict[str, Measured], dict[str, float]]:
    """Retrain the four models with ``seed``; their measurements and the CDEP corner penalties
    of the decoy and CDEP models."""
    val = validation_set()
    models = {name: train_named(name, seed=seed)[0] for name in ("clean", "decoy")}
    models.update({name: train_named(name, epochs=QUICK_EPOCHS, seed=seed)[0] for name in ("cdep", "saliency_guided")})
    rows = {name: measure(model, val) for name, model in models.items()}
    penalties = {name: corner_penalty(models[name], val["images"]) for name in ("decoy", "cdep")}
    return rows, penalties


def margins(rows: dict[str, Measured], penalties: dict[str, float]) -> dict[str, float]:
    """Each asserted effect as a margin: positive when the effect shows, in the effect's units."""
    clean, decoy, cdep, guided = (rows[name] for name in ("clean", "decoy", "cdep", "saliency_guided"))
    return {
        "decoy share: decoy - normal": decoy.decoy_share - clean.decoy_share,
        "accuracy: normal - decoy": clean.accuracy - decoy.accuracy,
        "corner penalty: decoy / CDEP": penalties["decoy"] / max(penalties["cdep"], 1e-12),
        "accuracy: CDEP - decoy": cdep.accuracy - decoy.accuracy,
        "decoy share: decoy - CDEP": decoy.decoy_share - cdep.decoy_share,
        "accuracy: saliency guided": guided.accuracy,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    table: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name, value in margins(*quick_retraining(seed)).items():
            table.setdefault(name, []).append(value)
        print(f"seed {seed} done", flush=True)
    print(f"{'margin':34} " + " ".join(f"{f'seed {s}':>8}" for s in args.seeds) + f" {'min':>8}")
    for name, values in table.items():
        print(f"{name:34} " + " ".join(f"{v:8.3f}" for v in values) + f" {min(values):8.3f}")


if __name__ == "__main__":
    main()
