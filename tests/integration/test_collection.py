"""Collection: a spec file becomes one item per check x method (x class), selectable as usual."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

TWO_METHODS = """\
grad: {method: Saliency, params: {abs: true}}
ixg: {method: InputXGradient}
"""

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
- id: per-class
  marks: [gate]
  shared_interest:
    gtc: {p10: ">= 0.5"}
    per_class: true
- id: only-ixg
  patterns:
    methods: [ixg]
    forbid: [distractor]
- id: decoy-unused
  region:
    mask: decoy
    share: {mean: "<= 0.05"}
"""

ALL_IDS = [
    "specs/x.saliency.yaml::cov[grad]",
    "specs/x.saliency.yaml::cov[ixg]",
    "specs/x.saliency.yaml::per-class[grad-circle]",
    "specs/x.saliency.yaml::per-class[grad-square]",
    "specs/x.saliency.yaml::per-class[grad-triangle]",
    "specs/x.saliency.yaml::per-class[ixg-circle]",
    "specs/x.saliency.yaml::per-class[ixg-square]",
    "specs/x.saliency.yaml::per-class[ixg-triangle]",
    "specs/x.saliency.yaml::only-ixg[ixg]",
    "specs/x.saliency.yaml::decoy-unused",
]


@pytest.fixture
def spec(project: pytest.Pytester, write_spec: Callable[..., Path]) -> pytest.Pytester:
    """A spec with two methods, a per-class check with a mark, a method-restricted check and a
    check that uses no attribution; ``gate`` is registered, as a user would in their ini."""
    write_spec(attributions=TWO_METHODS, checks=CHECKS)
    project.makeini("[pytest]\nmarkers =\n    gate: pre-deployment gate\n")
    return project


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_collect_only_lists_one_id_per_check_method_and_class(spec: pytest.Pytester) -> None:
    result = spec.runpytest_inprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([*ALL_IDS, "", f"{len(ALL_IDS)} tests collected in *"], consecutive=True)
    assert collected(result) == ALL_IDS


def test_tree_is_spec_file_then_checks(spec: pytest.Pytester) -> None:
    """One collector per spec file, items below it (what --dist loadscope groups by)."""
    result = spec.runpytest_inprocess("--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "  <Dir specs>",
            "    <SpecFile x.saliency.yaml>",
            "      <CheckItem cov[grad]>",
            "      <CheckItem cov[ixg]>",
        ],
        consecutive=True,
    )


def test_marks_from_yaml_select_with_dash_m(spec: pytest.Pytester) -> None:
    result = spec.runpytest_inprocess("--collect-only", "-q", "-m", "gate")
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == [node for node in ALL_IDS if "per-class" in node]
    result.stdout.fnmatch_lines(["6/10 tests collected (4 deselected) in *"])


def test_every_spec_item_carries_the_saliency_marker(spec: pytest.Pytester) -> None:
    result = spec.runpytest_inprocess("--collect-only", "-q", "-m", "not saliency")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["no tests collected (10 deselected) in *"])
    result = spec.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.saliency: a check from a *.saliency.yaml spec file"])


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cov", ["cov[grad]", "cov[ixg]"]),
        ("circle", ["per-class[grad-circle]", "per-class[ixg-circle]"]),
        ("ixg and not square and not cov", ["per-class[ixg-circle]", "per-class[ixg-triangle]", "only-ixg[ixg]"]),
        ("x.saliency.yaml and decoy", ["decoy-unused"]),
    ],
)
def test_dash_k_selects_by_check_method_class_and_file(
    spec: pytest.Pytester, expression: str, expected: list[str]
) -> None:
    result = spec.runpytest_inprocess("--collect-only", "-q", "-k", expression)
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == [f"specs/x.saliency.yaml::{name}" for name in expected]


def test_node_ids_select_single_items(spec: pytest.Pytester) -> None:
    result = spec.runpytest_inprocess(
        "--collect-only", "-q", "specs/x.saliency.yaml::per-class[ixg-square]", "specs/x.saliency.yaml::decoy-unused"
    )
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == ["specs/x.saliency.yaml::per-class[ixg-square]", "specs/x.saliency.yaml::decoy-unused"]


def test_yml_suffix_is_collected_and_other_yaml_is_not(project: pytest.Pytester, helpers: SimpleNamespace) -> None:
    (project.path / "specs" / "y.saliency.yml").write_text(helpers.spec_yaml(), encoding="utf-8")
    (project.path / "specs" / "other.yaml").write_text(helpers.spec_yaml(), encoding="utf-8")
    result = project.runpytest_inprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == ["specs/y.saliency.yml::cov[grad]"]


def test_a_broken_spec_collects_as_one_spec_item_beside_the_others(
    project: pytest.Pytester, write_spec: Callable[..., Path]
) -> None:
    write_spec("good")
    write_spec("broken", attributions="grad: {method: Saliency, parms: {abs: true}}")
    result = project.runpytest_inprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == ["specs/broken.saliency.yaml::spec", "specs/good.saliency.yaml::cov[grad]"]


COLLECTION_PROBE = """
import json
import sys
from pathlib import Path


def pytest_collection_finish(session):
    heavy = sorted(name for name in ("torch", "captum", "torchvision") if name in sys.modules)
    Path("imported.json").write_text(json.dumps({"heavy": heavy, "items": len(session.items)}))
"""


def test_collection_imports_no_torch_and_builds_no_model(project: pytest.Pytester, helpers: SimpleNamespace) -> None:
    """Lessons 1 and 13: --collect-only of a valid spec imports neither torch nor captum and
    never calls the model factory (here one that raises), so it needs no model at all."""
    (project.path / "specs" / "x.saliency.yaml").write_text(
        helpers.spec_yaml(model="factory: tinymodel:broken", checks=CHECKS, attributions=TWO_METHODS), encoding="utf-8"
    )
    project.makeconftest(COLLECTION_PROBE)
    result = project.runpytest_subprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["specs/x.saliency.yaml::cov[grad]", "10 tests collected in *"])
    import json

    probe = json.loads((project.path / "imported.json").read_text())
    assert probe == {"heavy": [], "items": 10}


def test_the_header_names_the_device_and_the_baseline_settings(
    project: pytest.Pytester, helpers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As pytest-randomly prints its seed: the defaults, with ``auto`` resolved because torch is
    already imported in this process (the header itself never imports it)."""
    import torch

    monkeypatch.delenv("CI", raising=False)
    (project.path / "specs" / "x.saliency.yaml").write_text(helpers.spec_yaml(), encoding="utf-8")
    result = project.runpytest_inprocess("--collect-only")
    assert result.ret == pytest.ExitCode.OK
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert (
        f"saliency: device auto ({device}), baselines compare, folder saliency-baselines/ beside each spec"
        in result.outlines
    )


@pytest.mark.parametrize(
    ("arguments", "ci", "expected"),
    [
        ((), "true", "baselines compare, updates refused with CI set"),
        (("--saliency-update-baselines",), None, "baselines update (changed)"),
        (
            ("--saliency-update-baselines", "--saliency-update-mode=missing", "--saliency-allow-ci-update"),
            "true",
            "baselines update (missing), allowed with CI set",
        ),
    ],
)
def test_the_header_shows_an_update_run_and_a_configured_folder(
    project: pytest.Pytester,
    helpers: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    arguments: tuple[str, ...],
    ci: str | None,
    expected: str,
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    project.makeini("[pytest]\nsaliency_baseline_dir = ci/baselines\nsaliency_device = cpu\n")
    (project.path / "specs" / "x.saliency.yaml").write_text(helpers.spec_yaml(), encoding="utf-8")
    result = project.runpytest_inprocess("--collect-only", *arguments)
    assert result.ret == pytest.ExitCode.OK
    assert f"saliency: device cpu, {expected}, folder ci/baselines/" in result.outlines
