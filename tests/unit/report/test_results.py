"""The JSON results document and its schema (pytest_saliency.report.results), and the run's
outputs (pytest_saliency.report.outputs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_saliency.report import outputs as report_outputs
from pytest_saliency.report import results as report_results
from pytest_saliency.report.format import rounded
from tests.unit.report.hand_made import sample_results

jsonschema = pytest.importorskip("jsonschema")


def test_document_matches_the_shipped_schema_and_is_sorted() -> None:
    results = sample_results()
    document = report_results.build_document(list(reversed(results)), artifacts=["report.html"])
    assert report_results.validation_errors(document) == []
    jsonschema.Draft202012Validator.check_schema(report_results.schema())
    assert document["format"] == "pytest-saliency-results"
    assert document["schema_version"] == report_results.SCHEMA_VERSION == 1
    assert [r["nodeid"].split("::")[1] for r in document["results"]] == [
        "spec",
        "cov[grad]",
        "pat[grad]",
        "faithful[ig]",
        "drifted[grad]",
    ]
    assert document["summary"] == {"total": 5, "passed": 2, "failed": 1, "warned": 1, "error": 1}
    assert document["artifacts"] == ["report.html"]
    # NaN is never written: an undefined aggregate is null
    cov = document["results"][1]
    assert cov["measurements"][1]["value"] is None
    # a spec error gets every required key
    error = document["results"][0]
    assert (error["kind"], error["method"], error["severity"], error["samples"]) == (None, None, "fail", 0)
    json.loads(report_results.dumps(document))  # strict JSON (allow_nan=False)


def test_schema_rejects_what_it_should() -> None:
    document = report_results.build_document(sample_results())
    broken = json.loads(report_results.dumps(document))
    broken["results"][0]["status"] = "maybe"
    del broken["results"][1]["measurements"]
    broken["schema_version"] = 2
    problems = report_results.validation_errors(broken)
    assert any(p.startswith("results/0/status") for p in problems), problems
    assert any(p.startswith("results/1") and "measurements" in p for p in problems), problems
    assert any(p.startswith("schema_version") for p in problems), problems


def test_result_artifacts_are_listed_once_at_the_top() -> None:
    results = sample_results()
    results[3]["artifacts"] = ["specs/saliency-baselines/x.obtained.json"]
    document = report_results.build_document(results, artifacts=["r.html", "r.html"])
    assert document["artifacts"] == ["r.html", "specs/saliency-baselines/x.obtained.json"]


def test_load_document_checks_format_and_version(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    report_results.write_document(good, report_results.build_document(sample_results()))
    assert report_results.load_document(good)["summary"]["total"] == 5
    for name, text, message in [
        ("junk.json", "{not json", "cannot read"),
        ("other.json", '{"format": "something-else"}', "not a pytest-saliency results file"),
        ("future.json", json.dumps({"format": "pytest-saliency-results", "schema_version": 99}), "version 99"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(report_results.ResultsFileError, match=message):
            report_results.load_document(path)


def test_write_run_outputs_reports_paths_and_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = report_outputs.write_run_outputs(
        sample_results(), report_path=str(tmp_path / "r.html"), json_path=str(tmp_path / "r.json")
    )
    assert outputs.lines == ["saliency results (JSON): r.json", "saliency report (HTML): r.html"]
    assert not outputs.missing
    (tmp_path / "blocked").write_text("a file, not a folder")
    outputs = report_outputs.write_run_outputs(sample_results(), json_path=str(tmp_path / "blocked" / "r.json"))
    assert outputs.lines[0].startswith("saliency results (JSON): could not write blocked/r.json")
    assert outputs.missing


def test_significant_digits_for_junit() -> None:
    assert rounded(0.6399999856948853) == 0.64
    assert rounded(123456789.0) == 123457000.0
    assert rounded(1.23456789e-7) == 1.23457e-7
    assert math.isnan(rounded(float("nan")))
