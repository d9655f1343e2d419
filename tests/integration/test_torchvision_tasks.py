"""torchvision's detectors and segmenters at random initialisation through a spec: built by their
factories with ``weights=None, weights_backbone=None`` (nothing downloads), detections kept at any
score (``box_score_thresh=0``) and a small ``min_size``, so each runs in seconds. A random detector
may find nothing: the test then asserts the missed count, not scores. One runs in the default
suite; the rest under the ``zoo`` marker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_saliency.dispatch import compute_shard
from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec
from pytest_saliency.streaming import Need, Plan

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = 4
SMALL = "weights: null, weights_backbone: null, num_classes: 4, min_size: 64, max_size: 64"
DETECTORS = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": f"{{{SMALL}, box_score_thresh: 0.0}}",
    "retinanet_resnet50_fpn": f"{{{SMALL}, score_thresh: 0.0}}",
    "fcos_resnet50_fpn": f"{{{SMALL}, score_thresh: 0.0}}",
    "ssdlite320_mobilenet_v3_large": "{weights: null, weights_backbone: null, num_classes: 4, score_thresh: 0.0}",
}
"""Each builder's settings; SSDlite resizes to its fixed 320 x 320 inside."""
SEGMENTERS = ("deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50")


def spec_text(task: str, factory: str, kwargs: str, output: str = "") -> str:
    return f"""\
version: 1
task: {task}
segmentation: {{background: 0}}
model:
  factory: {factory}
  kwargs: {kwargs}
{output}data:
  npz: {ROOT / "examples" / "objects" / "val.npz"}
  limit: {OBJECTS}
  batch_size: 2
attributions:
  grad: {{method: Saliency, params: {{abs: true}}}}
checks:
  - id: coverage
    shared_interest: {{gtc: {{mean: ">= 0"}}}}
  - id: decoy
    region: {{mask: decoy, method: occlusion, share: {{mean: "<= 1"}}}}
"""


def run(tmp_path: Path, text: str) -> None:
    path = tmp_path / "zoo.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    torch.manual_seed(0)
    engine = SpecEngine(load_spec(path), torch.device("cpu"), (tmp_path,))
    result = compute_shard(engine.worker, Plan((Need(0, "grad"), Need(1, None))), engine.source.read(range(OBJECTS)))
    assert not result.errors, result.errors
    assert len(result.base["index"]) + len(result.missed) == OBJECTS
    assert all("missed" not in line or "detected" in line or "nowhere" in line for line in result.missed)
    for need, values in result.statistics.items():
        for name, column in values.items():
            assert len(column) == len(result.base["index"]), (need, name)


def detector_spec(name: str) -> str:
    return spec_text("detection", f"torchvision.models.detection:{name}", DETECTORS[name])


def test_a_random_torchvision_detector_runs_through_a_spec(tmp_path: Path) -> None:
    run(tmp_path, detector_spec("fasterrcnn_mobilenet_v3_large_320_fpn"))


@pytest.mark.zoo
@pytest.mark.parametrize("name", [name for name in DETECTORS if name != "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_random_torchvision_detectors(tmp_path: Path, name: str) -> None:
    run(tmp_path, detector_spec(name))


@pytest.mark.zoo
@pytest.mark.parametrize("name", SEGMENTERS)
def test_random_torchvision_segmenters(tmp_path: Path, name: str) -> None:
    kwargs = "{weights: null, weights_backbone: null, num_classes: 4}"
    run(tmp_path, spec_text("segmentation", f"torchvision.models.segmentation:{name}", kwargs, "  output: out\n"))
