"""``task: detection`` and ``task: segmentation`` from YAML through pytest, on models whose scores
are written out, so matching, missed objects and every number can be computed independently here.

``taskmodels.BoxDetector`` detects at three fixed boxes: box ``k``'s score is
``sigmoid(w_k * mean of channel 0 inside it - 2)`` (channel 0 read through a 1x1 convolution, which
sanity checks re-initialise); detections under 0.3 are dropped. Boxes 0 and 1 are of class 0
(box 1 overlaps box 0 with IoU 56/72 = 0.78 and scores higher), box 2 is of class 1.
``taskmodels.Segmenter`` predicts class 1 where channel 0 is above 0.5 (logits ``0`` and
``4 x0 - 2``), returning torchvision's ``{"out": logits}``.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec

TASK_MODELS = """\
import torch
from torch import nn

BOXES = [[0.0, 0.0, 8.0, 8.0], [1.0, 0.0, 9.0, 8.0], [8.0, 8.0, 16.0, 16.0]]
LABELS = [0, 0, 1]


class BoxDetector(nn.Module):
    def __init__(self, weights=(4.0, 5.0, 4.0)):
        super().__init__()
        self.read = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.read.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
        self.register_buffer("boxes", torch.tensor(BOXES))
        self.register_buffer("labels", torch.tensor(LABELS))
        self.register_buffer("weights", torch.tensor(weights))

    def forward(self, x):
        channel = self.read(x)[:, 0]
        means = torch.stack(
            [channel[:, int(b[1]):int(b[3]), int(b[0]):int(b[2])].flatten(1).mean(1) for b in BOXES], dim=1
        )
        scores = torch.sigmoid(self.weights * means - 2)
        return [
            {"boxes": self.boxes[s > 0.3], "labels": self.labels[s > 0.3], "scores": s[s > 0.3]} for s in scores
        ]


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([0.0, -2.0]))
            self.head.weight[1, 0] = 4.0

    def forward(self, x):
        return {"out": self.head(x)}
"""


def task_arrays() -> dict[str, np.ndarray]:
    """Three 16x16 images; channel 0 bright where objects are seen, channel 1 a decoy patch."""
    images = np.zeros((3, 3, 16, 16), dtype=np.float32)
    images[0, 0, :8, :8] = 1.0  # object 0: class 0, found
    images[0, 0, 8:, 8:] = 1.0  # object 1: class 1, found
    images[1, 0, :8, :8] = 0.8  # object 3: class 0, found; object 4 (class 1) dark: missed
    images[2, 0, 2:6, 2:6] = 0.9  # an image without objects
    images[:, 1, 12:15, 0:3] = 1.0
    images[:, 2] = 0.3
    decoy = images[:, 1] > 0
    masks = (images[:, 0] > 0.5).astype(np.uint8)  # segmentation: class 1 where channel 0 is bright
    return {
        "images": images,
        "boxes": np.array(
            [[0, 0, 8, 8], [8, 8, 16, 16], [0, 8, 8, 16], [0, 0, 8, 8], [8, 8, 16, 16]], dtype=np.float32
        ),
        "box_labels": np.array([0, 1, 1, 0, 1]),  # object 2 has no detector box: missed
        "box_images": np.array([0, 0, 0, 1, 1]),
        "masks": masks,
        "decoy": decoy,
    }


EVERY_CHECK = """\
  - id: coverage
    shared_interest: {{gtc: {{mean: ">= 0.0"}}}}
  - id: patterns
    patterns: {{max_fraction: {{distractor: 1.0}}}}
  - id: localisation
    localisation: {{pointing_game: {{mean: ">= 0.0"}}}}
  - id: complexity
    complexity: {{sparseness: {{mean: ">= 0.0"}}}}
  - id: fidelity
    fidelity: {{steps: 4, unit: "patch:4", gap: ">= -1"}}
  - id: decoy
    region: {{mask: decoy, method: occlusion, share: {{mean: "<= 1"}}}}
  - id: robustness
    robustness: {{n_perturb_samples: 2, max_sensitivity: {{mean: ">= 0"}}}}
  - id: sanity
    sanity: {{test: cascading, similarity: spearman, final: "<= 1"}}
  - id: drift
    drift:
      against: {{model: {{factory: "{against}"}}}}
      segments: {{patch: 4}}
      keep: 2
      clusters: 2
      max_shift: 1.0
"""


def spec_text(task: str, extra: str = "") -> str:
    model = "taskmodels:BoxDetector" if task == "detection" else "taskmodels:Segmenter"
    header = f"""\
version: 1
task: {task}
{extra}model:
  factory: {model}
data:
  npz: ../tasks.npz
  batch_size: 2
  shard_size: 2
attributions:
  grad: {{method: Saliency}}
checks:
"""
    return header + EVERY_CHECK.format(against=model)


@pytest.fixture
def tasks(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(taskmodels=TASK_MODELS)
    np.savez(project.path / "tasks.npz", **task_arrays())
    return project


def engine(project: pytest.Pytester, text: str) -> SpecEngine:
    path = project.path / "specs" / "t.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    return SpecEngine(load_spec(path), torch.device("cpu"), (project.path,))


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_detection_matches_the_same_class_above_the_iou_with_the_highest_score(tasks: pytest.Pytester) -> None:
    shard = engine(tasks, spec_text("detection")).shard([0, 1, 2, 3, 4])
    clean = shard.logits.diagonal().tolist()
    # object 0: box 1 (IoU 0.78, 5 * 7/8 - 2) beats box 0; object 1: box 2; object 2: nothing of its
    # class there; object 3: box 1 again; object 4: box 2 is dark (score under 0.3): missed
    assert clean == pytest.approx([sigmoid(5 * 7 / 8 - 2), sigmoid(2), 0.0, sigmoid(5 * 0.7 - 2), 0.0], abs=1e-6)
    assert shard.found.tolist() == [True, True, False, True, False]
    strict = engine(tasks, spec_text("detection", "detection: {match_iou: 0.8}\n")).shard([0])
    assert strict.logits.diagonal().tolist() == pytest.approx([sigmoid(2)], abs=1e-6)  # box 1 no longer matches


def test_detection_is_matched_again_on_a_perturbed_image(tasks: pytest.Pytester) -> None:
    shard = engine(tasks, spec_text("detection")).shard([0, 1])
    perturbed = shard.images[:1].clone()
    perturbed[0, 0, :, 4:8] = 0.0  # box 0: mean 1/2; box 1: 3/8 bright: box 0 now scores highest
    score = shard.scored(shard.model)(perturbed)[0, 0].item()
    assert score == pytest.approx(max(sigmoid(4 * 0.5 - 2), sigmoid(5 * 3 / 8 - 2)), abs=1e-6)
    assert score == pytest.approx(sigmoid(0.0), abs=1e-6)


def test_detection_gradient_is_the_matched_scores_gradient(tasks: pytest.Pytester) -> None:
    spec_engine = engine(tasks, spec_text("detection"))
    shard = spec_engine.shard([0, 1])
    network = spec_engine.model.network
    image = shard.images[:1].clone().requires_grad_(True)
    found = network(image)[0]
    same = (found["labels"] == 0) & (found["boxes"][:, 0] <= 1)  # the two boxes over object 0
    (expected,) = torch.autograd.grad(found["scores"][same].max(), image)
    assert torch.allclose(shard.attributions("grad")[0], expected[0], atol=1e-6)


def test_segmentation_gradient_is_seg_grad_cams_region_sum(tasks: pytest.Pytester) -> None:
    text = spec_text("segmentation", "segmentation: {background: 0}\n").replace(
        "factory: taskmodels:Segmenter", "factory: taskmodels:Segmenter\n  output: out"
    )
    spec_engine = engine(tasks, text)
    shard = spec_engine.shard()
    assert shard.batch.labels.tolist() == [1, 1, 1]  # one (image, class 1) pair per image
    network = spec_engine.model.network
    image = shard.images[:1].clone().requires_grad_(True)
    logits = network(image)["out"][0]
    region = logits.detach().argmax(dim=0) == 1  # fixed from the clean prediction
    (expected,) = torch.autograd.grad(logits[1][region].sum(), image)
    assert torch.allclose(shard.attributions("grad")[0], expected[0], atol=1e-6)
    probabilities = logits.detach().softmax(dim=0)[1][region].mean().item()
    assert shard.scored(shard.model, bounded=True)(shard.images[:1])[0, 0].item() == pytest.approx(probabilities)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_every_check_kind_runs_and_missed_samples_are_counted(
    tasks: pytest.Pytester, helpers: SimpleNamespace, task: str
) -> None:
    extra = (
        "detection: {max_missed: 0.3}\n" if task == "detection" else "segmentation: {background: 0, max_missed: 0.3}\n"
    )
    text = spec_text(task, extra)
    if task == "segmentation":
        text = text.replace("factory: taskmodels:Segmenter\n", "factory: taskmodels:Segmenter\n  output: out\n", 1)
        text = text.replace('factory: "taskmodels:Segmenter"', 'factory: "taskmodels:Segmenter", output: out')
    (tasks.path / "specs" / "t.saliency.yaml").write_text(text, encoding="utf-8")
    result = tasks.runpytest_inprocess("specs/t.saliency.yaml", "-p", "no:randomly")
    output = result.stdout.str()
    rows = helpers.summary_rows(output)
    assert {row["check"] for row in rows} >= {
        "coverage", "patterns", "localisation", "complexity", "fidelity", "decoy", "robustness", "sanity", "drift"
    }  # fmt: skip
    assert "error" not in {row.get("status") for row in rows}, output
    if task == "detection":
        assert "2 of 5 objects missed by the model" in output
        assert "sample 2 (image 0, 1 at [0, 8, 8, 16]): no 1 detected with IoU >= 0.5" in output
        result.assert_outcomes(failed=9)  # 0.4 of the objects missed > max_missed 0.3
    else:
        assert "missed by the model" not in output
        result.assert_outcomes(passed=9)


ONE_CHECK = """\
version: 1
task: {task}
{extra}model:
  factory: {factory}
data:
  npz: ../tasks.npz
attributions:
  {method}
checks:
  - id: c
    {check}
"""
COVERAGE = 'shared_interest: {gtc: {mean: ">= 0"}}'
GRAD = "grad: {method: Saliency}"


@pytest.mark.parametrize(
    ("task", "extra", "factory", "method", "check", "message"),
    [
        ("detection", "", "tinymodel:build", GRAD, COVERAGE,
         "model: task: detection needs one dict per image with boxes, labels, scores (torchvision's form); "
         "the model returns Tensor: adapt the detector's output in its factory (docs/spec.md)"),
        ("segmentation", "", "taskmodels:Segmenter", GRAD, COVERAGE,
         "model: task: segmentation needs logits (N, classes, H, W), the model gives dict: "
         "pick them with model.output (torchvision: out; Hugging Face: logits)"),
        ("segmentation", "", "taskmodels:Segmenter\n  output: out", "d: {method: DRISE}", COVERAGE,
         "attributions.d.method: DRISE explains a detector's objects: set task: detection"),
        ("detection", "", "taskmodels:BoxDetector", GRAD, "sanity: {test: random_logit, final: '<= 1'}",
         "checks[0].sanity.test: random_logit compares a classifier's classes; task: detection takes test: "
         "cascading, independent or efficient"),
        ("detection", "", "taskmodels:BoxDetector", GRAD, "region: {mask: decoy, share: {mean: '<= 1'}}",
         "checks[0].region.method: contextual decomposition splits a classifier's logits; task: detection "
         "takes method: occlusion"),
        ("detection", "", "taskmodels:BoxDetector", GRAD, "fidelity: {score: accuracy, gap: '>= 0'}",
         "checks[0].fidelity.score: task: detection has no accuracy score: use score: probability"),
        ("detection", "", "taskmodels:BoxDetector\n  kwargs: {weights: [0.0, 0.0, 0.0]}", GRAD, COVERAGE,
         "model: the model missed all 5 samples (first: sample 0 (image 0, 0 at [0, 0, 8, 8]): no 0 detected "
         "with IoU >= 0.5): nothing to explain"),
    ],
    ids=["detector-output", "segmenter-output", "drise-without-detection", "random-logit", "cd", "accuracy", "all-missed"],
)  # fmt: skip
def test_task_errors_are_one_line_at_their_key(
    tasks: pytest.Pytester,
    helpers: SimpleNamespace,
    task: str,
    extra: str,
    factory: str,
    method: str,
    check: str,
    message: str,
) -> None:
    text = ONE_CHECK.format(task=task, extra=extra, factory=factory, method=method, check=check)
    (tasks.path / "specs" / "t.saliency.yaml").write_text(text, encoding="utf-8")
    result = tasks.runpytest_inprocess("specs/t.saliency.yaml", "-p", "no:randomly")
    output = result.stdout.str()
    assert f": {message}" in output.replace("\n", " ") or f": {message}" in output, output
    helpers.assert_no_traceback(output)


def test_segmentation_can_explain_the_ground_truth_region(tasks: pytest.Pytester) -> None:
    extra = "segmentation: {background: 0, region: ground_truth}\n"
    text = spec_text("segmentation", extra).replace(
        "factory: taskmodels:Segmenter", "factory: taskmodels:Segmenter\n  output: out", 1
    )
    spec_engine = engine(tasks, text)
    shard = spec_engine.shard()
    image = shard.images[1:2].clone().requires_grad_(True)  # channel 0 is 0.8: predicted as class 1 too
    truth = torch.from_numpy(task_arrays()["masks"][1] == 1)
    (expected,) = torch.autograd.grad(spec_engine.model.network(image)["out"][0, 1][truth].sum(), image)
    assert torch.allclose(shard.attributions("grad")[1], expected[0], atol=1e-6)


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_a_rerun_of_a_task_comes_from_the_result_cache_with_the_same_json(tasks: pytest.Pytester, task: str) -> None:
    text = spec_text(task, "")
    if task == "segmentation":
        text = text.replace("factory: taskmodels:Segmenter\n", "factory: taskmodels:Segmenter\n  output: out\n", 1)
        text = text.replace('factory: "taskmodels:Segmenter"', 'factory: "taskmodels:Segmenter", output: out')
    (tasks.path / "specs" / "t.saliency.yaml").write_text(text, encoding="utf-8")
    runs = [
        tasks.runpytest_inprocess("specs/t.saliency.yaml", "-p", "no:randomly", f"--saliency-json={name}.json")
        for name in ("cold", "warm")
    ]
    runs[0].stdout.fnmatch_lines(["saliency cache: 0 of 3 shards from the cache, 3 computed"])
    runs[1].stdout.fnmatch_lines(["saliency cache: 3 of 3 shards from the cache, 0 computed"])
    results = [
        json.loads((tasks.path / f"{name}.json").read_text(encoding="utf-8"))["results"] for name in ("cold", "warm")
    ]
    for result in results[0] + results[1]:
        result.pop("duration")
    assert results[0] == results[1]
    missed = [[line for line in run.outlines if "missed by the model" in line] for run in runs]
    assert missed[0] == missed[1]  # the objects the detector missed are listed from the cache too
    assert (task == "detection") == any("2 of 5 objects missed by the model" in line for line in missed[1])
