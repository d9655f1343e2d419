"""Running checks: pass/fail from known scores, the failure text, the summary table, and
pytest's own flags (-x, --lf, -qq, -W, --junitxml) on spec items.

The tiny model's scores are exact (see conftest): ``looks_at=object`` scores 1 everywhere,
``both`` has IoU = SC = 0.64 (16/25) and GTC = 1 on every sample, ``decoy`` scores 0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]
Run = Callable[..., pytest.RunResult]

# spec_yaml puts the first check's "- id:" on line 11
FIRST_CHECK_LINE = 11
LOCATION = f"specs/x.saliency.yaml:{FIRST_CHECK_LINE}"
COV_FAILS = f"{LOCATION}: check 'cov' [grad] failed: iou.mean = 0.64 (want >= 0.9)"

COV_AND_PATTERNS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
    gtc: {min: ">= 0.9"}
- id: pat
  patterns:
    max_fraction: {distractor: 0.05}
"""
TWO_CHECKS = """\
- id: covered
  shared_interest:
    gtc: {mean: ">= 0.9"}
- id: tight
  shared_interest:
    iou: {mean: ">= 0.9"}
"""
WARN_ONLY = """\
- id: cov
  severity: warn
  shared_interest:
    iou: {mean: ">= 0.9"}
"""


@pytest.fixture
def run(project: pytest.Pytester) -> Run:
    """pytest in-process in the project directory (collects ``specs/``)."""
    return project.runpytest_inprocess


def cells(rows: list[dict[str, str]], *columns: str) -> list[tuple[str, ...]]:
    return [tuple(row[column] for column in columns) for row in rows]


def test_passing_spec_exits_0_and_prints_the_summary_table(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    path = write_spec(checks=COV_AND_PATTERNS)
    assert helpers.position(path.read_text(), "- id: cov") == f"{FIRST_CHECK_LINE}:3"
    result = run()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["specs/x.saliency.yaml .. *", "=* saliency summary =*"])
    rows = helpers.summary_rows(result.stdout.str())
    assert cells(rows, "spec", "check", "method", "measured", "value", "threshold", "status") == [
        ("x", "cov", "grad", "iou.mean", "1.0000", ">= 0.9", "passed"),
        ("x", "cov", "grad", "gtc.min", "1.0000", ">= 0.9", "passed"),
        ("x", "pat", "grad", "fraction distractor", "0.0000", "<= 0.05", "passed"),
    ]
    assert "FAILURES" not in result.stdout.str()
    assert "warnings summary" not in result.stdout.str()


def test_failing_check_shows_location_measured_threshold_and_worst_samples(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    write_spec(looks_at="both", checks=COV_AND_PATTERNS)
    result = run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ cov[[]grad] _*",
            COV_FAILS,
            "  measured  value            threshold  status",
            "  iou.mean  0.6400 ± 0.0000  >= 0.9     FAIL",
            "  gtc.min   1.0000           >= 0.9     ok",
            "  samples: 6",
            "  worst samples by iou (of 6; 0 undefined):",
            "  sample     label  predicted    iou    gtc     sc  patterns",
            "       0    circle     circle  0.640  1.000  0.640         -",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "=* saliency summary =*",
            "*short test summary info*",
            f"FAILED specs/x.saliency.yaml::cov[[]grad] - {LOCATION}: check*",
        ]
    )
    rows = helpers.summary_rows(result.stdout.str())
    assert cells(rows, "check", "measured", "value", "threshold", "status", "ok") == [
        ("cov", "iou.mean", "0.6400", ">= 0.9", "failed", "failed"),
        ("cov", "gtc.min", "1.0000", ">= 0.9", "failed", "ok"),
        ("pat", "fraction distractor", "0.0000", "<= 0.05", "passed", "ok"),
    ]
    helpers.assert_no_traceback(result.stdout.str())


@pytest.mark.parametrize("style", ["long", "native", "short", "line"])
def test_failure_text_is_the_same_for_every_traceback_style(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace, style: str
) -> None:
    write_spec(looks_at="both")
    result = run(f"--tb={style}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([COV_FAILS])
    helpers.assert_no_traceback(result.stdout.str())


def test_locations_are_relative_to_where_pytest_runs(
    write_spec: WriteSpec, project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec(looks_at="both")
    project.makeini("[pytest]\n")  # rootdir stays the project, where tinymodel.py lives
    monkeypatch.chdir(project.path / "specs")
    result = project.runpytest_inprocess("x.saliency.yaml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([COV_FAILS.removeprefix("specs/")])


def test_patterns_check_fails_on_the_distractor_fraction(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    """Looking at the decoy with every prediction wrong: all six samples are distractors."""
    write_spec(
        model="factory: tinymodel:build\nkwargs: {looks_at: decoy, shift: 1}",
        checks="- id: pat\n  patterns:\n    max_fraction: {distractor: 0.05, confuser: 0.5}\n",
    )
    result = run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"{LOCATION}: check 'pat' [grad] failed: fraction distractor = 1 (want <= 0.05)",
            "  measured             value            threshold  status",
            "  fraction distractor  1.0000 ± 0.1952  <= 0.05    FAIL",
            "  fraction confuser    0.0000 ± 0.1952  <= 0.5     ok",
            "  samples: 6",
            "  pattern counts over 6 samples with defined scores (0 undefined): distractor 6",
            "  samples in distractor:",
            "  sample     label  predicted    iou    gtc     sc    patterns",
            "       0    circle     square  0.000  0.000  0.000  distractor",
        ],
        consecutive=True,
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_per_class_items_measure_their_own_samples(write_spec: WriteSpec, run: Run, helpers: SimpleNamespace) -> None:
    write_spec(looks_at="both", checks='- id: cov\n  shared_interest:\n    sc: {max: "<= 0.7"}\n    per_class: true\n')
    result = run("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"specs/x.saliency.yaml::cov[[]grad-{name}] PASSED*" for name in helpers.CLASSES])
    rows = helpers.summary_rows(result.stdout.str())
    assert cells(rows, "method", "value", "status") == [
        (f"grad-{name}", "0.6400", "passed") for name in helpers.CLASSES
    ]


def test_dash_x_stops_after_the_first_failing_check(write_spec: WriteSpec, run: Run) -> None:
    write_spec(looks_at="both", checks=TWO_CHECKS.replace("gtc: {mean", "sc: {mean"))  # both checks fail
    result = run("-x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert "tight" not in result.stdout.str()
    run().assert_outcomes(failed=2)


def test_last_failed_reruns_only_the_failed_item(write_spec: WriteSpec, run: Run) -> None:
    write_spec(looks_at="both", checks=TWO_CHECKS)
    run().assert_outcomes(passed=1, failed=1)
    again = run("--lf", "-v")
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    again.assert_outcomes(failed=1)  # --lf leaves the passed check out at collection
    again.stdout.fnmatch_lines(
        ["run-last-failure: rerun previous 1 failure*", "specs/x.saliency.yaml::tight[[]grad] FAILED*"]
    )
    assert "covered" not in again.stdout.str()


def test_severity_warn_passes_with_a_warning_and_strict_makes_it_fail(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    write_spec(looks_at="both", checks=WARN_ONLY)
    headline = "check 'cov' [grad] failed (severity: warn): iou.mean = 0.64 (want >= 0.9)"

    result = run()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(  # located at the check in the spec, whose line pytest shows
        [
            "*warnings summary*",
            "specs/x.saliency.yaml::cov[grad]",
            f"  {LOCATION}: SaliencyWarning: {headline}",
            "    measured  value            threshold  status",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(["    - id: cov", "", "-- Docs: *"], consecutive=True)
    assert "pytest_saliency" not in result.stdout.str()
    assert cells(helpers.summary_rows(result.stdout.str()), "check", "value", "status") == [("cov", "0.6400", "warned")]

    strict = run("--saliency-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines([f"{LOCATION}: {headline}", "  iou.mean  0.6400 ± 0.0000  >= 0.9     FAIL"])
    assert cells(helpers.summary_rows(strict.stdout.str()), "check", "value", "status") == [("cov", "0.6400", "failed")]
    assert "SaliencyWarning" not in strict.stdout.str()
    helpers.assert_no_traceback(strict.stdout.str())


def test_warnings_as_errors_fail_with_the_same_text(write_spec: WriteSpec, run: Run, helpers: SimpleNamespace) -> None:
    write_spec(looks_at="both", checks=WARN_ONLY)
    result = run("-W", "error::pytest_saliency.errors.SaliencyWarning")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([COV_FAILS.replace("failed:", "failed (severity: warn):")])
    helpers.assert_no_traceback(result.stdout.str())


def test_warned_check_that_passes_gives_no_warning(write_spec: WriteSpec, run: Run) -> None:
    write_spec(looks_at="both", checks=WARN_ONLY.replace(">= 0.9", ">= 0.5"))
    result = run("--saliency-strict")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


NOISY = "grad: {method: Saliency, params: {abs: true}, noise_tunnel: {nt_samples: 4, stdevs: 0.3}}"
ALL_METRICS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0", p10: ">= 0"}
    gtc: {median: ">= 0"}
    sc: {min: ">= 0"}
    sc_continuous: {mean: ">= 0"}
"""


def test_reruns_give_identical_numbers(
    write_spec: WriteSpec, run: Run, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    """SmoothGrad draws noise; the spec's seed makes a rerun (here: in another process) equal."""
    write_spec(attributions=NOISY, checks=ALL_METRICS)
    first = run()
    first.assert_outcomes(passed=1)
    second = project.runpytest_subprocess()
    second.assert_outcomes(passed=1)
    rows = helpers.summary_rows(first.stdout.str())
    assert [r["measured"] for r in rows] == ["iou.mean", "iou.p10", "gtc.median", "sc.min", "sc_continuous.mean"]
    assert rows[-1]["value"] not in ("1.0000", "0.0000"), "the noise must change the scores"
    assert helpers.summary_rows(second.stdout.str()) == rows
    assert helpers.summary_values(second.stdout.str()) == helpers.summary_values(first.stdout.str())


def test_dash_qq_hides_the_summary_and_dash_q_keeps_it(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    write_spec()
    quiet = run("-q")
    quiet.assert_outcomes(passed=1)
    quiet.stdout.fnmatch_lines(["=* saliency summary =*"])
    quieter = run("-qq")
    assert quieter.ret == pytest.ExitCode.OK
    assert "saliency summary" not in quieter.stdout.str()
    assert helpers.summary_lines(quieter.stdout.str()) == []
    assert "iou.mean" not in quieter.stdout.str()


def test_measurements_are_junit_properties(write_spec: WriteSpec, run: Run, project: pytest.Pytester) -> None:
    write_spec(looks_at="both")
    result = run("--junitxml=junit.xml")
    result.assert_outcomes(failed=1)
    case = ET.parse(project.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    assert case.get("name") == "cov[grad]"
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert list(properties) == [
        "saliency.iou.mean",
        "saliency.iou.mean.threshold",
        "saliency.iou.mean.interval",
        "saliency.iou.mean.lower",
        "saliency.iou.mean.upper",
        "saliency.iou.mean.status",
        "saliency.status",
    ]
    assert float(properties["saliency.iou.mean"] or "nan") == pytest.approx(0.64)
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith(f"{LOCATION}: check 'cov' [grad] failed")


def test_device_option_overrides_the_ini_value(
    write_spec: WriteSpec, run: Run, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    write_spec()
    project.makeini("[pytest]\nsaliency_device = gpu\n")
    from_ini = run()
    assert from_ini.ret == pytest.ExitCode.TESTS_FAILED
    from_ini.assert_outcomes(failed=1)
    from_ini.stdout.fnmatch_lines(
        ["*_ cov[[]grad] _*", "--saliency-device gpu: Expected one of cpu, cuda, *", "=* saliency summary =*"],
        consecutive=True,
    )
    helpers.assert_no_traceback(from_ini.stdout.str())
    from_option = run("--saliency-device", "cpu")
    assert from_option.ret == pytest.ExitCode.OK
    from_option.assert_outcomes(passed=1)


def test_cuda_device_runs_there_or_says_it_is_missing(
    write_spec: WriteSpec, run: Run, helpers: SimpleNamespace
) -> None:
    import torch

    write_spec(looks_at="both")
    result = run("--saliency-device", "cuda")
    result.assert_outcomes(failed=1)
    if torch.cuda.is_available():  # the same exact numbers on the GPU
        result.stdout.fnmatch_lines(
            [
                COV_FAILS,
                "  measured  value            threshold  status",
                "  iou.mean  0.6400 ± 0.0000  >= 0.9     FAIL",
            ],
            consecutive=True,
        )
    else:
        result.stdout.fnmatch_lines(["--saliency-device cuda: CUDA is not available on this machine; use cpu or auto"])
    helpers.assert_no_traceback(result.stdout.str())
