"""timm and transformers are optional extras: without them a torchvision spec runs and imports
neither, and a spec naming one is one line that says which extra to install. Collecting specs of
every source imports no model library (class names come from JSON)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]

# Loaded by pytest before the specs are collected: from then on, importing timm or transformers
# fails as if they were not installed, and the run's end records whether either was imported.
BLOCKER = """\
import sys

BLOCKED = ("timm", "transformers")


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


for name in [name for name in sys.modules if name.split(".")[0] in BLOCKED]:
    del sys.modules[name]
sys.meta_path.insert(0, Blocker())


def pytest_sessionfinish(session):
    imported = sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0] in BLOCKED})
    print("imported optional packages:", imported or "none")
"""
CHECKS = "- id: cov\n  shared_interest:\n    iou: {mean: '>= 0'}\n"


def test_without_the_extras_a_torchvision_spec_runs_and_the_others_say_what_to_install(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    project.makeconftest(BLOCKER)
    write_spec("tv", model="torchvision: mobilenet_v3_small\nkwargs: {num_classes: 3}", checks=CHECKS)
    timm = write_spec("t", model="timm: resnet18", checks=CHECKS).read_text()
    (project.path / "vit").mkdir()
    (project.path / "vit" / "config.json").write_text('{"model_type": "vit"}', encoding="utf-8")
    hf = write_spec("hf", model="huggingface: ../vit", checks=CHECKS).read_text()
    result = project.runpytest_subprocess("-p", "no:randomly", "-s")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            f"specs/t.saliency.yaml:{helpers.position(timm, 'resnet18')}: model.timm: "
            "timm models need timm: pip install 'pytest-saliency[timm]'",
            f"specs/hf.saliency.yaml:{helpers.position(hf, '../vit')}: model.huggingface: "
            "huggingface models need transformers: pip install 'pytest-saliency[huggingface]'",
            "*imported optional packages: none",
        ]
    )


HEAVY_PROBE = """\
import sys


def pytest_collection_finish(session):
    heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "torchvision", "timm", "transformers"})
    print("imported at collection:", heavy or "none")
"""


def test_collecting_specs_of_every_source_imports_no_model_library(
    project: pytest.Pytester, write_spec: WriteSpec
) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    project.makeconftest(HEAVY_PROBE)
    (project.path / "vit").mkdir()
    config = '{"model_type": "vit", "id2label": {"0": "cat", "1": "dog"}}'
    (project.path / "vit" / "config.json").write_text(config, encoding="utf-8")
    per_class = CHECKS + "    per_class: true\n"
    write_spec("hf", model="huggingface: ../vit", data="npz: ../data.npz", checks=per_class)
    write_spec("t", model="timm: resnet18", checks=CHECKS)
    write_spec("tv", model="torchvision: resnet18\npreset: IMAGENET1K_V1", checks=CHECKS)
    result = project.runpytest_subprocess("--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines_random(
        [
            "imported at collection: none",
            "specs/hf.saliency.yaml::cov[[]grad-cat]",
            "specs/hf.saliency.yaml::cov[[]grad-dog]",
            "specs/t.saliency.yaml::cov[[]grad]",
            "specs/tv.saliency.yaml::cov[[]grad]",
        ]
    )
