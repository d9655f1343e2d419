"""The ``agreement`` kind (the example of docs/checks.md) end to end: items, pass and fail, a
reference that names no attribution, and every report, none of which knows the kind.

The tiny model's gradient is a positive multiple of the object mask (see conftest), so the
unsigned and signed gradient maps rank the pixels alike (Spearman 1 on every sample), and the
seeded random map agrees with neither."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_saliency.report.results import validation_errors

WriteSpec = Callable[..., Path]

ATTRIBUTIONS = """\
grad: {method: Saliency, params: {abs: true}}
signed: {method: Saliency, params: {abs: false}}
noise: {method: random}
"""
CHECKS = """\
- id: agree
  agreement:
    methods: [signed, noise]
    reference: grad
    rank_correlation: {mean: ">= 0.99", min: ">= 0.9"}
"""


def test_the_same_evidence_agrees_and_noise_does_not(
    project: pytest.Pytester, write_spec: WriteSpec, tmp_path: Path
) -> None:
    write_spec(attributions=ATTRIBUTIONS, checks=CHECKS)
    results, report, summary = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    result = project.runpytest_inprocess(
        "specs/", f"--saliency-json={results}", f"--saliency-report={report}", f"--saliency-markdown={summary}"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*: check 'agree' [[]noise[]] failed: rank_correlation.mean = * (want >= 0.99)*"])
    document = json.loads(results.read_text())
    assert validation_errors(document) == []
    by_item = {row["variant"]: row for row in document["results"]}
    assert by_item["signed"]["kind"] == "agreement" and by_item["signed"]["status"] == "passed"
    assert [(m["key"], m["value"]) for m in by_item["signed"]["measurements"]] == [
        ("rank_correlation.mean", 1.0),
        ("rank_correlation.min", 1.0),
    ]
    assert by_item["signed"]["per_sample"]["rank_correlation"] == [1.0] * 6
    assert by_item["noise"]["status"] == "failed"
    assert abs(by_item["noise"]["measurements"][0]["value"]) < 0.5
    assert "agree[noise]" in report.read_text()
    assert "| `agree[noise]` | failed | rank_correlation.mean |" in summary.read_text()


def test_a_reference_that_names_no_attribution_is_one_line_at_its_key(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    checks = CHECKS.replace("reference: grad", "reference: grd")
    path = write_spec(attributions=ATTRIBUTIONS, checks=checks)
    result = project.runpytest_inprocess("specs/")
    result.assert_outcomes(failed=2)
    at = helpers.position(path.read_text(), "grd")
    result.stdout.fnmatch_lines(
        [
            f"specs/x.saliency.yaml:{at}: checks[0].agreement.reference: no attribution named 'grd' (did you mean 'grad'?)"
        ]
    )
