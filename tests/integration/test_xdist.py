"""pytest-xdist: ``-n 2 --dist loadscope`` keeps each spec on one worker, and the controller
alone prints one merged summary (DESIGN lessons 4 and 5). These runs start real worker
processes, so they run pytest in a subprocess."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("xdist")

WriteSpec = Callable[..., Path]

PER_CLASS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
- id: by-class
  shared_interest:
    gtc: {min: ">= 0.9"}
    per_class: true
"""
COVERED = """\
- id: covered
  shared_interest:
    gtc: {mean: ">= 0.9"}
    iou: {mean: "<= 0.7"}
"""
WORKER_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED) (specs/\S+?)::(\S+)")


def workers_by_spec(output: str) -> dict[str, set[str]]:
    """``spec path -> workers that ran its items``, from ``-v`` output under xdist."""
    seen: dict[str, set[str]] = {}
    for line in output.splitlines():
        match = WORKER_LINE.match(line)
        if match:
            seen.setdefault(match[3], set()).add(match[1])
    return seen


def test_loadscope_runs_two_specs_and_prints_one_merged_summary(
    write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    write_spec("x", checks=PER_CLASS)
    write_spec("y", looks_at="both", checks=COVERED)
    result = project.runpytest_subprocess("-n", "2", "--dist", "loadscope", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=5)
    output = result.stdout.str()
    assert output.count("saliency summary") == 1, output
    result.stdout.fnmatch_lines(["=* saliency summary =*"])

    rows = helpers.summary_rows(output)  # the workers' results, merged (in arrival order)
    columns = ("spec", "check", "method", "measured", "value", "status")
    assert sorted(tuple(row[column] for column in columns) for row in rows) == [
        *[("x", "by-class", f"grad-{name}", "gtc.min", "1.0000", "passed") for name in helpers.CLASSES],
        ("x", "cov", "grad", "iou.mean", "1.0000", "passed"),
        ("y", "covered", "grad", "gtc.mean", "1.0000", "passed"),
        ("y", "covered", "grad", "iou.mean", "0.6400", "passed"),
    ]

    workers = workers_by_spec(output)
    assert set(workers) == {"specs/x.saliency.yaml", "specs/y.saliency.yaml"}
    assert all(len(names) == 1 for names in workers.values()), workers  # one spec, one worker


def test_failures_and_spec_errors_travel_back_from_workers(
    write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    write_spec("x", looks_at="both")
    broken = write_spec("y", attributions="grad: {method: Saliency, parms: {abs: true}}").read_text()
    result = project.runpytest_subprocess("-n", "2", "--dist", "loadscope")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml:11: check 'cov' [grad] failed: iou.mean = 0.64 (want >= 0.9)",
            "  measured  value            threshold  status",
            "  iou.mean  0.6400 ± 0.0000  >= 0.9     FAIL",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            f"specs/y.saliency.yaml:{helpers.position(broken, 'parms')}: "
            "attributions.grad: unknown key 'parms' (did you mean 'params'?)"
        ]
    )
    output = result.stdout.str()
    assert output.count("saliency summary") == 1
    rows = helpers.summary_rows(output)
    assert sorted((row["spec"], row["check"], row["status"]) for row in rows) == [
        ("x", "cov", "failed"),
        ("y", "spec", "error"),
    ]
    helpers.assert_no_traceback(output)
