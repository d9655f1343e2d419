"""Spec errors: one failing item per broken spec whose whole message is ``path:line:col: ...``
lines, no traceback; other specs still run; the exit code is non-zero (DESIGN lessons 2 and 3).
Problems found only when the model or data load (runtime) read the same way, at the key that
named the file or factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]
Run = Callable[..., pytest.RunResult]

COV = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
"""


@pytest.fixture
def run(project: pytest.Pytester) -> Run:
    """pytest in-process in the project directory (collects ``specs/``)."""
    return project.runpytest_inprocess


@dataclass(frozen=True)
class Case:
    """A spec (``spec_yaml`` arguments), the text the error points at, and its message."""

    spec: dict[str, str]
    at: str
    message: str
    small_masks: bool = False  # write small-masks.npz: masks of 8x8 for images of 16x16


CASES = {
    "unknown-key": Case(
        {"attributions": "grad: {method: Saliency, parms: {abs: true}}"},
        at="parms",
        message="attributions.grad: unknown key 'parms' (did you mean 'params'?)",
    ),
    "unknown-check-kind": Case(
        {"checks": '- id: cov\n  shared_interst:\n    iou: {mean: ">= 0.5"}\n'},
        at="shared_interst",
        message="checks[0]: unknown key 'shared_interst' (did you mean 'shared_interest'?)",
    ),
    "bad-threshold": Case(
        {"checks": '- id: cov\n  shared_interest:\n    iou: {mean: ">= high"}\n'},
        at='">= high"',
        message="checks[0].shared_interest.iou.mean: bad threshold '>= high': "
        'write one comparison (>=, >, <=, <) and a number, such as ">= 0.5"',
    ),
    "bare-number-threshold": Case(
        {"checks": "- id: cov\n  shared_interest:\n    gtc: {p10: 0.5}\n"},
        at="0.5}",
        message="checks[0].shared_interest.gtc.p10: "
        'a threshold is a quoted comparison such as ">= 0.5", not a bare number',
    ),
    "unknown-captum-method": Case(
        {"attributions": "grad: {method: Saliencey}"},
        at="Saliencey",
        message="attributions.grad.method: unknown captum attribution method 'Saliencey' (did you mean 'Saliency'?)",
    ),
    "missing-npz": Case(
        {"data": "npz: ../missing.npz"},
        at="../missing.npz",
        message="data.npz: file not found: ../missing.npz (paths are relative to the spec file)",
    ),
    "masks-do-not-match-images": Case(
        {"data": "npz: ../small-masks.npz"},
        at="../small-masks.npz",
        message="data.npz: masks (6, 8, 8) do not match images (6, 3, 16, 16): masks must be (N, H, W) = (6, 16, 16)",
        small_masks=True,
    ),
    "check-names-unknown-attribution": Case(
        {"checks": COV + "    methods: [grad, gard]\n"},
        at="gard",
        message="checks[0].shared_interest.methods[1]: no attribution named 'gard' (did you mean 'grad'?)",
    ),
    "per-class-without-classes": Case(
        {"data": "npz: ../data.npz", "checks": COV.replace("0.9", "0.5") + "    per_class: true\n"},
        at="true\n",
        message="checks[0].shared_interest.per_class: per_class needs the class names: add data.classes",
    ),
    "region-mask-not-in-data": Case(
        {"checks": '- id: decoy-unused\n  region:\n    mask: decoi\n    share: {mean: "<= 0.05"}\n'},
        at="decoi",
        message="checks[0].region.mask: the data has no mask 'decoi' (did you mean 'decoy'?) (extra masks: decoy)",
    ),
    "duplicate-key": Case(
        {"checks": COV + '    iou: {mean: ">= 0.6"}\n'},
        at='iou: {mean: ">= 0.6',
        message="duplicate key 'iou'",
    ),
    "yaml-syntax": Case(
        {"attributions": "grad: {method: Saliency"},
        at=":\n  - id: cov",
        message="YAML syntax: expected ',' or '}', but got ':'",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_spec_error_is_one_positioned_line_and_a_failing_item(
    case: Case, project: pytest.Pytester, write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    if case.small_masks:
        (project.path / "small-masks.npz").write_bytes(helpers.npz_bytes(helpers.make_arrays(mask_size=8)))
    text = write_spec(**case.spec).read_text()
    line = f"specs/x.saliency.yaml:{helpers.position(text, case.at)}: {case.message}"

    result = run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*_ spec error _*", line, "=* saliency summary =*"], consecutive=True)
    result.stdout.fnmatch_lines([f"FAILED specs/x.saliency.yaml::spec - {helpers.literal(line[:30])}*"])
    helpers.assert_no_traceback(result.stdout.str())


def test_every_problem_of_a_spec_is_listed_in_file_order(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    text = write_spec(
        attributions="grad: {method: Saliency, parms: {abs: true}}", checks=COV.replace(">= 0.9", ">= high")
    ).read_text()
    unknown = f"specs/x.saliency.yaml:{helpers.position(text, 'parms')}: attributions.grad: unknown key 'parms'"
    value_at = helpers.position(text, '">= high"')
    threshold = f"specs/x.saliency.yaml:{value_at}: checks[0].shared_interest.iou.mean: bad"
    result = run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*_ spec error _*", f"{unknown} *", f"{helpers.literal(threshold)} threshold*", "=* saliency summary =*"],
        consecutive=True,
    )


def test_broken_spec_beside_a_good_one_fails_the_run_but_not_the_good_checks(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    write_spec("good")
    broken = write_spec("broken", attributions="grad: {method: Saliencey}").read_text()
    worse = write_spec("worse", checks=COV + "    methods: [gard]\n").read_text()
    result = run("-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [  # spec errors run first, before any model loads
            "specs/broken.saliency.yaml::spec FAILED*",
            "specs/worse.saliency.yaml::spec FAILED*",
            "specs/good.saliency.yaml::cov[[]grad] PASSED*",
        ],
        consecutive=True,
    )
    broken_at, worse_at = helpers.position(broken, "Saliencey"), helpers.position(worse, "gard")
    result.stdout.fnmatch_lines(
        [
            "*_ spec error _*",
            f"specs/broken.saliency.yaml:{broken_at}: attributions.grad.method: unknown captum attribution method *",
            "*_ spec error _*",
            helpers.literal(f"specs/worse.saliency.yaml:{worse_at}: checks[0].shared_interest.methods[0]: ")
            + "no attribution named 'gard'*",
        ],
        consecutive=True,
    )
    rows = helpers.summary_rows(result.stdout.str())
    assert [(row["spec"], row["check"], row["status"]) for row in rows] == [
        ("broken", "spec", "error"),
        ("worse", "spec", "error"),
        ("good", "cov", "passed"),
    ]
    assert rows[0]["measured"].startswith(f"specs/broken.saliency.yaml:{broken_at}: ")
    helpers.assert_no_traceback(result.stdout.str())


def test_unregistered_mark_warns_at_its_line_and_is_a_spec_error_under_strict_markers(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    # a name no other test registers: pytest remembers registered marks across in-process runs
    marked = COV.replace("  shared_interest", "  marks: [never_registered]\n  shared_interest")
    text = write_spec(checks=marked).read_text()
    line, column = helpers.position(text, "never_registered").split(":")
    result = run()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            f"specs/x.saliency.yaml:{line}",
            f"  specs/x.saliency.yaml:{line}: PytestUnknownMarkWarning: Unknown pytest.mark.never_registered *",
            "    marks: [[]never_registered]",
        ],
        consecutive=True,
    )
    assert "_pytest" not in result.stdout.str()

    strict = run("--strict-markers")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{line}:{column}: checks[0].marks[0]: "
            "'never_registered' not found in `markers` configuration option"
        ]
    )
    assert "Interrupted" not in strict.stdout.str()


# --- problems found while loading the model and data --------------------------------------


def one_line_failure(result: pytest.RunResult, line: str, helpers: SimpleNamespace) -> None:
    """The item's whole failure text is ``line`` (pytest's next section follows it)."""
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*_ cov[[]grad] _*", line, "=* saliency summary =*"], consecutive=True)
    helpers.assert_no_traceback(result.stdout.str())


def test_model_factory_raising_is_one_line_at_the_factory(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    text = write_spec(model="factory: tinymodel:broken\nkwargs: {num_classes: 3}").read_text()
    result = run()
    result.assert_outcomes(failed=1)
    one_line_failure(
        result,
        f"specs/x.saliency.yaml:{helpers.position(text, 'tinymodel:broken')}: model.factory: "
        "tinymodel:broken(num_classes=3) raised RuntimeError: factory is broken on purpose",
        helpers,
    )


def test_model_factory_that_cannot_be_imported(write_spec: WriteSpec, run: Run, helpers: SimpleNamespace) -> None:
    text = write_spec(model="factory: tinymodle:build").read_text()
    result = run()
    result.assert_outcomes(failed=1)
    one_line_failure(
        result,
        f"specs/x.saliency.yaml:{helpers.position(text, 'tinymodle')}: model.factory: "
        "cannot import 'tinymodle': No module named 'tinymodle'",
        helpers,
    )


def test_weights_that_do_not_fit_the_model(
    write_spec: WriteSpec, run: Run, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    import torch

    torch.save({"weight": torch.ones(5)}, project.path / "five.pt")
    text = write_spec(model="factory: tinymodel:build\nweights: ../five.pt").read_text()
    result = run()
    result.assert_outcomes(failed=1)
    one_line_failure(
        result,
        f"specs/x.saliency.yaml:{helpers.position(text, '../five.pt')}: model.weights: "
        "../five.pt does not fit the model: shape mismatch weight (5,) vs model (3,)",
        helpers,
    )


def test_weights_file_that_is_not_a_state_dict(
    write_spec: WriteSpec, run: Run, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    (project.path / "junk.pt").write_bytes(b"not a checkpoint")
    text = write_spec(model="factory: tinymodel:build\nweights: ../junk.pt").read_text()
    result = run()
    result.assert_outcomes(failed=1)
    one_line_failure(
        result,
        f"specs/x.saliency.yaml:{helpers.position(text, '../junk.pt')}: model.weights: "
        "cannot load ../junk.pt as a state_dict (weights_only=True): *",
        helpers,
    )


def test_unknown_attribute_parameter_points_at_the_parameter(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    text = write_spec(attributions="grad: {method: Saliency, params: {abss: true}}").read_text()
    result = run()
    result.assert_outcomes(failed=1)
    one_line_failure(
        result,
        f"specs/x.saliency.yaml:{helpers.position(text, 'true')}: attributions.grad.params.abss: "
        "Saliency.attribute() has no parameter 'abss' (did you mean 'abs'?)",
        helpers,
    )


def test_runtime_error_fails_every_check_of_the_spec_and_spares_other_specs(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    write_spec("good")
    write_spec("broken", model="factory: tinymodel:broken", checks=COV + COV.replace("cov", "second"))
    result = run("-v")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["specs/good.saliency.yaml::cov[[]grad] PASSED*"])
    failures = result.stdout.str().split("= FAILURES =")[1].split("saliency summary")[0]
    assert failures.count("tinymodel:broken() raised RuntimeError: factory is broken on purpose") == 2
    helpers.assert_no_traceback(result.stdout.str())
