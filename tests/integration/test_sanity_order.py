"""Cascading randomisation in the order of the computation, from the logits down: heads that
never reach the logits are left out (and named), and constant-reset layers (PReLU) still count.

``heads.build`` is a face classifier in the manner of MTCNN's ONet: a trunk (a convolution and a
PReLU), the face head that gives the logits, then a box head and a landmark head defined after
it, which the logits never use (``model.output: 0`` picks the face head). Randomising in
reverse definition order (Quantus' MPRT) would spend its first two steps on those heads, with a
similarity of exactly 1 for any method."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import pytest_saliency.checks.sanity  # noqa: F401  (imported once here, not in every in-process run)
from pytest_saliency.metrics.sanity import parameterised_layers

WriteSpec = Callable[..., Path]
HEADS = """\
import torch
from torch import nn


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the "trained" weights: a fixed draw
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.PReLU(4)
        with torch.no_grad():
            self.act.weight.fill_(-0.5)  # trained away from the 0.25 that reset_parameters() sets
        self.face = nn.Linear(4 * 16 * 16, 3)
        self.box = nn.Linear(4 * 16 * 16, 4)
        self.landmarks = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        trunk = self.act(self.conv(x)).flatten(1)
        return self.face(trunk), self.box(trunk), self.landmarks(trunk)


def build():
    return Heads()
"""


def test_unused_heads_are_left_out_and_every_step_changes_the_maps(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    project.makepyfile(heads=HEADS)
    checks = '- id: cascade\n  sanity:\n    similarity: spearman_abs\n    every_step: "<= 0.999"\n'
    write_spec(model="factory: heads:build\noutput: 0", checks=checks)
    project.runpytest_inprocess("--saliency-json=results.json").assert_outcomes(passed=1)
    (item,) = json.loads((project.path / "results.json").read_text())["results"]
    assert item["details"][0].startswith(
        "cascading randomisation of 3 layers (cumulatively, in the order of the computation, from the logits down;"
    )
    assert item["details"][-1] == (
        "left out: landmarks, box (their output never reaches the logits and randomising them leaves the first "
        "batch's logits unchanged: an unused head)"
    )
    sanity = item["sanity"]
    assert sanity["steps"] == ["original", "face", "act", "conv"] and sanity["types"] == ["Linear", "PReLU", "Conv2d"]
    assert sanity["left_out"] == ["landmarks", "box"]
    assert sanity["curve"][0] == 1.0 and all(value < 0.999 for value in sanity["curve"][1:])
    heads = project.path / "heads.py"
    namespace: dict[str, object] = {}
    exec(compile(heads.read_text(), str(heads), "exec"), namespace)
    model = namespace["build"]()  # type: ignore[operator]
    assert parameterised_layers(model)[:2] == ["landmarks", "box"]  # what reverse definition order would do first
