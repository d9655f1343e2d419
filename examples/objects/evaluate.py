"""Print the README's table of the shipped detector and segmenter pairs on ``val.npz``.

``python -m examples.objects.evaluate``: per model, the share of objects found (a detection of the
object's class with IoU >= 0.5; detector) or of class regions predicted somewhere (segmenter),
and the pixel accuracy on the shapes (segmenter), on the validation images (decoy random) and on
the same images with the decoy patches encoding the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from examples.objects.data import make_objects
from examples.objects.model import build_detector, build_segmenter
from examples.objects.train import VAL_SEED, VAL_SIZE
from pytest_saliency.targets import MatchedDetection

EXAMPLE_DIR = Path(__file__).resolve().parent


@torch.no_grad()
def found_objects(detector: torch.nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """The share of objects with a detection of their class at IoU >= 0.5."""
    output = detector(torch.from_numpy(arrays["images"]))
    image_of = torch.from_numpy(arrays["box_images"])
    objects = MatchedDetection(torch.from_numpy(arrays["boxes"]), torch.from_numpy(arrays["box_labels"]), image_of)
    scores = objects.scores(output)  # (N images, M objects)
    return float((scores[image_of, torch.arange(len(image_of))] > 0).float().mean())


@torch.no_grad()
def shape_accuracy(segmenter: torch.nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Pixel accuracy over the shapes' pixels."""
    predicted = segmenter(torch.from_numpy(arrays["images"])).argmax(dim=1)
    truth = torch.from_numpy(arrays["masks"])
    shapes = truth > 0
    return float((predicted[shapes] == truth[shapes]).float().mean())


def main() -> None:
    for kind, build, measure in (
        ("detector", build_detector, found_objects),
        ("segmenter", build_segmenter, shape_accuracy),
    ):
        for name in ("clean", "decoy"):
            model = build()
            model.load_state_dict(torch.load(EXAMPLE_DIR / f"{kind}_{name}.pt", weights_only=True))
            model.eval()
            random = measure(model, make_objects(VAL_SIZE, VAL_SEED, decoy="random"))
            label = measure(model, make_objects(VAL_SIZE, VAL_SEED, decoy="label"))
            print(f"{kind}_{name}.pt: {random:.3f} (decoy random), {label:.3f} (decoy = label)")


if __name__ == "__main__":
    main()
