"""The Markdown summary (pytest_saliency.report.markdown) on hand-made results."""

from __future__ import annotations

from pathlib import Path

from pytest_saliency.report import results as report_results
from pytest_saliency.report.markdown import append_step_summary, markdown_summary
from tests.unit.report.hand_made import sample_results


def test_failures_come_first_and_every_measurement_has_a_row() -> None:
    document = report_results.build_document(sample_results())
    text = markdown_summary(document["results"], document["summary"])
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    measured = sum(len(result["measurements"]) or 1 for result in document["results"])
    assert len(rows) == measured
    statuses = [row.split("|")[2].strip() for row in rows]
    first_pass = statuses.index("ok") if "ok" in statuses else len(statuses)
    assert "failed" in statuses[:first_pass] and "failed" not in statuses[first_pass:]
    assert "| gtc.mean | — |" in text  # an undefined value is a dash, never NaN


def test_a_cell_keeps_its_pipes_escaped_and_the_job_summary_grows(tmp_path: Path) -> None:
    results = sample_results()
    results[0]["measurements"][0]["name"] = "a|b"
    document = report_results.build_document(results)
    text = markdown_summary(document["results"], document["summary"])
    assert "a\\|b" in text
    summary = tmp_path / "summary.md"
    append_step_summary(summary, "first\n")
    append_step_summary(summary, text)
    assert summary.read_text(encoding="utf-8") == "first\n\n" + text
