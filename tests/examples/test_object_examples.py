"""The multi-object shapes examples: the data, the shipped detector and segmenter pairs, and their
specs (``examples/detection.saliency.yaml``, ``examples/segmentation.saliency.yaml``): the clean
model passes, the twin trained with class-encoding patches fails, with the same thresholds.

The default run checks the decoy check on the first 48 samples (seconds); every check of the
clean models on the first 64 samples runs under the ``slow`` marker (minutes: D-RISE runs 100
masked images per image). The README's figures are of the whole specs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.objects import evaluate
from examples.objects.data import SIZE, make_objects
from pytest_saliency.baselines import BaselineSettings
from pytest_saliency.checks.kind import ItemScope
from pytest_saliency.checks.registry import kind_of
from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec
from pytest_saliency.spec.overrides import Override
from pytest_saliency.streaming import Need, Plan

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = {"detection": "detector", "segmentation": "segmenter"}


def test_objects_lie_in_their_boxes_and_the_patches_beside_them() -> None:
    arrays = make_objects(8, seed=3, decoy="label")
    assert arrays["images"].shape == (8, 3, SIZE, SIZE) and len(arrays["boxes"]) == 16
    for box, label, image in zip(arrays["boxes"], arrays["box_labels"], arrays["box_images"], strict=True):
        x1, y1, x2, y2 = box
        ys, xs = np.nonzero(arrays["masks"][image] == label + 1)
        inside = (xs + 0.5 >= x1) & (xs + 0.5 <= x2) & (ys + 0.5 >= y1) & (ys + 0.5 <= y2)
        assert inside.sum() > 0.5 * ((x2 - x1) * (y2 - y1)) / 2  # the shape fills its box
    assert not (arrays["decoy"] & (arrays["masks"] > 0)).any()  # patches never cover a shape
    assert arrays["decoy"].sum() == 16 * 16  # one 4x4 patch per object
    same = make_objects(8, seed=3, decoy="random")
    assert np.array_equal(same["masks"], arrays["masks"]) and np.array_equal(same["boxes"], arrays["boxes"])


def test_the_readme_shows_the_detection_spec_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Detectors and segmenters") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    assert block[: block.index("```")] == (ROOT / "examples" / "detection.saliency.yaml").read_text(encoding="utf-8")


def test_the_readme_quotes_the_pairs_figures(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate.main()
    printed = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in printed.splitlines():
        name, figures = line.split(": ")
        random, label = re.findall(r"\d\.\d{3}", figures)
        assert re.search(rf"`{re.escape(name)}`[^\n]*\| {random} \| {label} \|", readme), line


def engine(task: str, weights: str, limit: int | None) -> SpecEngine:
    overrides = [Override("model.weights", f"objects/{WEIGHTS[task]}_{weights}.pt")]
    if limit is not None:
        overrides.append(Override("data.limit", str(limit)))
    loaded = load_spec(ROOT / "examples" / f"{task}.saliency.yaml", overrides=overrides, base=ROOT / "examples")
    return SpecEngine(loaded, torch.device("cpu"), (ROOT,))


def outcomes(spec_engine: SpecEngine, only: str | None = None) -> dict[str, bool]:
    """Every item of the spec (or of the check ``only``): passed or not."""
    spec = spec_engine.spec
    chosen = [(i, check) for i, check in enumerate(spec.checks) if only in (None, check.id)]
    needs = [
        Need(i, method if check.config.uses_attributions else None)
        for i, check in chosen
        for method in (check.config.methods or list(spec.attributions) if check.config.uses_attributions else [None])
    ]
    result = spec_engine.result(Plan(tuple(dict.fromkeys(needs))))
    decided = {}
    for need in dict.fromkeys(needs):
        check = spec.checks[need.check_index]
        outcome = kind_of(check).outcome(spec_engine, check, ItemScope(need.method), result, BaselineSettings())
        decided[f"{check.id}[{need.method}]"] = outcome.passed
    return decided


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_the_decoy_twin_fails_the_decoy_check_the_clean_model_passes(task: str) -> None:
    assert outcomes(engine(task, "clean", 48), "decoy-unused") == {"decoy-unused[None]": True}
    assert outcomes(engine(task, "decoy", 48), "decoy-unused") == {"decoy-unused[None]": False}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_the_clean_model_passes_every_check_of_the_spec(task: str) -> None:
    assert all(outcomes(engine(task, "clean", 64)).values())
