"""Values from outside the spec file: ``--saliency-set KEY=VALUE`` and ``${VAR}`` /
``${VAR:-default}``; every report names the weights file tested and its sha256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_saliency.cli import main

WriteSpec = Callable[..., Path]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def weights(project: pytest.Pytester) -> Path:
    """``w.pt`` (all-ones weights of the tiny model) and ``heavy.pt`` (all twos) in the project."""
    import torch

    torch.save({"weight": torch.ones(3)}, project.path / "w.pt")
    torch.save({"weight": 2 * torch.ones(3)}, project.path / "heavy.pt")
    return project.path / "w.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_candidate_weights_set_on_the_command_line_fail_the_clean_specs_coverage_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release-gate case on the shipped example, from the repository root, the spec unedited."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:cacheprovider")
    arguments = (
        "specs/shapes.saliency.yaml",
        "-k",
        "object-coverage",
        "--saliency-set",
        "model.weights=examples/shapes/decoy.pt",
    )
    result = pytester.runpytest_inprocess(*arguments)
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(
        [
            "*check 'object-coverage' [[]grad-circle] failed: *",
            f"shapes weights examples/shapes/decoy.pt sha256:{sha256(ROOT / 'examples/shapes/decoy.pt')[:16]}",
        ]
    )


def test_set_replaces_a_value_and_is_recorded_in_the_json(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_spec()  # looks_at=object: IoU 1
    project.runpytest_inprocess().assert_outcomes(passed=1)
    result = project.runpytest_inprocess("--saliency-set", "model.kwargs.looks_at=both", "--saliency-json", "out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*check 'cov' [[]grad] failed: iou.mean = 0.64 (want >= 0.9)"])
    document = json.loads((project.path / "out.json").read_text())
    assert document["overrides"] == ["model.kwargs.looks_at=both"]
    (entry,) = document["results"]
    assert entry["overrides"] == {
        "model.kwargs.looks_at": {"value": "both", "from": "--saliency-set model.kwargs.looks_at=both"}
    }
    assert entry["weights"] is None  # a factory without weights


def test_a_weights_path_on_the_command_line_is_relative_to_where_pytest_runs(
    project: pytest.Pytester, write_spec: WriteSpec, weights: Path
) -> None:
    write_spec(model="factory: tinymodel:build\nweights: ../w.pt")  # in the spec: relative to specs/
    result = project.runpytest_inprocess("--saliency-json", "out.json", "--saliency-report", "out.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"x weights w.pt sha256:{sha256(weights)[:16]}"])
    document = json.loads((project.path / "out.json").read_text())
    assert document["results"][0]["weights"] == {"path": "w.pt", "sha256": sha256(weights)}
    assert sha256(weights) in (project.path / "out.html").read_text()

    heavy = project.path / "heavy.pt"
    result = project.runpytest_inprocess("--saliency-set", "model.weights=heavy.pt", "--saliency-json", "out.json")
    result.assert_outcomes(passed=1)  # the same saliency, other weights: named in every report
    result.stdout.fnmatch_lines([f"x weights heavy.pt sha256:{sha256(heavy)[:16]}"])
    assert json.loads((project.path / "out.json").read_text())["results"][0]["weights"]["sha256"] == sha256(heavy)


def test_problems_with_an_override_are_positioned_at_the_option(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    write_spec()
    cases = {
        "model.weigths=w.pt": "--saliency-set model.weigths: model: unknown key 'weigths' (did you mean 'weights'?)",
        "model.weights=missing.pt": f"--saliency-set model.weights: file not found: {project.path / 'missing.pt'} "
        "(paths are relative to where the command runs)",
        "checks.0.severity=[fail": "--saliency-set checks.0.severity: '[fail' is not one of fail, warn (did you mean 'fail'?)",
        "checks.3.severity=warn": "--saliency-set checks.3.severity: checks has 1 items; no item 3",
        "checks.0.shared_interest.iou.mean=0.5": "--saliency-set checks.0.shared_interest.iou.mean: "
        'a threshold is a quoted comparison such as ">= 0.5", not a bare number',
    }
    for setting, line in cases.items():
        result = project.runpytest_inprocess("--saliency-set", setting)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([helpers.literal(line).replace("[*]", "*")])
        helpers.assert_no_traceback(result.stdout.str())
    malformed = project.runpytest_inprocess("--saliency-set", "model.weights")
    assert malformed.ret == pytest.ExitCode.USAGE_ERROR
    malformed.stderr.fnmatch_lines(["*--saliency-set expects KEY=VALUE*got 'model.weights'"])


def test_environment_variables_with_and_without_a_default(
    project: pytest.Pytester,
    write_spec: WriteSpec,
    weights: Path,
    helpers: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_spec(model="factory: tinymodel:build\nweights: ${CANDIDATE_WEIGHTS:-../w.pt}")
    monkeypatch.delenv("CANDIDATE_WEIGHTS", raising=False)
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"x weights w.pt sha256:{sha256(weights)[:16]}"])
    assert json.loads((project.path / "out.json").read_text())["results"][0]["overrides"] == {
        "model.weights": {"value": "../w.pt", "from": "${CANDIDATE_WEIGHTS:-../w.pt}"}
    }
    monkeypatch.setenv("CANDIDATE_WEIGHTS", "../heavy.pt")  # written in the spec: relative to it
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"x weights heavy.pt sha256:{sha256(project.path / 'heavy.pt')[:16]}"])

    path.write_text(path.read_text().replace("${CANDIDATE_WEIGHTS:-../w.pt}", "${NO_SUCH_VARIABLE}"))
    unset = project.runpytest_inprocess("--collect-only", "-q")
    where = helpers.position(path.read_text(), "${NO_SUCH_VARIABLE}")
    unset.stdout.fnmatch_lines(["specs/x.saliency.yaml::spec"])
    errors = project.runpytest_inprocess()
    errors.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{where}: model.weights: environment variable NO_SUCH_VARIABLE is not set "
            "(set it, or give a default: ${NO_SUCH_VARIABLE:-...})"
        ]
    )


def test_validate_accepts_the_same_set(
    project: pytest.Pytester, write_spec: WriteSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec()
    assert main(["validate", str(path), "--set", "decide=interval"]) == 0
    assert main(["validate", str(path), "--set", "decide=intervall"]) == 1
    out = capsys.readouterr().out
    assert "--set decide: 'intervall' is not one of point, interval (did you mean 'interval'?)" in out
    assert main(["validate", str(path), "--set", "decide"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_an_unset_variable_in_a_value_that_set_replaces_is_no_error(
    project: pytest.Pytester, write_spec: WriteSpec, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release job: ``weights: ${CANDIDATE}`` in the file, the value given by --saliency-set."""
    write_spec(model="factory: tinymodel:build\nweights: ${CANDIDATE}")
    monkeypatch.delenv("CANDIDATE", raising=False)
    result = project.runpytest_inprocess("--saliency-set", "model.weights=heavy.pt", "--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"x weights heavy.pt sha256:{sha256(project.path / 'heavy.pt')[:16]}"])
    overrides = json.loads((project.path / "out.json").read_text())["results"][0]["overrides"]
    assert list(overrides) == ["model.weights"]
    assert overrides["model.weights"]["from"] == "--saliency-set model.weights=heavy.pt"
    # replacing the whole block drops the variables in it too
    block = project.runpytest_inprocess("--saliency-set", "model={factory: 'tinymodel:build', weights: w.pt}")
    block.assert_outcomes(passed=1)
    # elsewhere an unset variable is still an error
    project.runpytest_inprocess("--saliency-set", "seed=1").stdout.fnmatch_lines(["*CANDIDATE is not set*"])


def test_set_takes_a_threshold_as_it_is_written(project: pytest.Pytester, write_spec: WriteSpec) -> None:
    write_spec()  # looks_at=object: IoU 1
    result = project.runpytest_inprocess(
        "--saliency-set", "checks.0.shared_interest.iou.mean=>= 0.5", "--saliency-json", "out.json"
    )
    result.assert_outcomes(passed=1)
    (entry,) = json.loads((project.path / "out.json").read_text())["results"]
    assert entry["measurements"][0]["threshold"] == ">= 0.5"
    failing = project.runpytest_inprocess("--saliency-set", "checks.0.shared_interest.iou.mean=< 0.5")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["*iou.mean = 1 (want < 0.5)"])


def test_a_number_field_takes_a_lone_variable_as_a_number(
    project: pytest.Pytester, write_spec: WriteSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(data="npz: ../data.npz\nclasses: [circle, square, triangle]\nlimit: ${N}")
    monkeypatch.setenv("N", "4")
    result = project.runpytest_inprocess("--saliency-json", "out.json")
    result.assert_outcomes(passed=1)
    (entry,) = json.loads((project.path / "out.json").read_text())["results"]
    assert entry["samples"] == 4
    assert entry["overrides"]["data.limit"] == {"value": "4", "from": "${N}"}
