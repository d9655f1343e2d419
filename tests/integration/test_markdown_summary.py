"""``--saliency-markdown`` and the GitHub Actions job summary (``$GITHUB_STEP_SUMMARY``) from real
runs. The tiny model's scores are exact (see conftest): ``looks_at=object`` gives IoU = 1 on
every sample, ``looks_at=decoy`` IoU = 0."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

WriteSpec = Callable[..., Path]

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
    gtc: {min: ">= 0.5"}
"""


def rows(text: str, spec: str) -> list[list[str]]:
    """The cells of the table rows under the spec's heading."""
    section = text[text.index(f"### {spec} ") :]
    section = section[: section.find("\n### ", 1) if "\n### " in section[1:] else None]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| `")
    ]


def test_the_markdown_has_a_row_per_measurement_failures_first(
    project: pytest.Pytester, write_spec: WriteSpec, tmp_path: Path
) -> None:
    write_spec("good", checks=CHECKS, looks_at="object")
    write_spec("bad", checks=CHECKS, looks_at="decoy")
    summary = tmp_path / "summary.md"
    result = project.runpytest_inprocess("specs/", "-p", "no:cacheprovider", f"--saliency-markdown={summary}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"saliency summary (Markdown): {summary}"])
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## Saliency checks\n\n2 items: 1 failed, 1 passed\n")
    assert rows(text, "good") == [
        ["`cov[grad]`", "ok", "iou.mean", "1.0000 ± 0.000", ">= 0.9"],
        ["`cov[grad]`", "ok", "gtc.min", "1.0000", ">= 0.5"],
    ]
    failed = rows(text, "bad")
    assert [row[1:3] + row[4:] for row in failed] == [
        ["failed", "iou.mean", ">= 0.9"],
        ["failed", "gtc.min", ">= 0.5"],
    ]
    assert failed[0][3].startswith("0.0000")
    assert "weights" not in text  # a factory without a weights file has no hash to show


def test_the_job_summary_is_appended_to_never_overwritten(
    project: pytest.Pytester, write_spec: WriteSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec("good", checks=CHECKS, looks_at="object")
    job_summary = tmp_path / "step_summary.md"
    job_summary.write_text("# build\n\nan earlier step's summary\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(job_summary))
    for _ in range(2):
        result = project.runpytest_inprocess("specs/", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines([f"saliency summary (Markdown) appended to: {job_summary}"])
    text = job_summary.read_text(encoding="utf-8")
    assert text.startswith("# build\n\nan earlier step's summary\n\n## Saliency checks\n")
    assert len(re.findall(r"^## Saliency checks$", text, flags=re.M)) == 2
    assert not list(project.path.rglob("*.json"))  # the summary alone writes no other report
    (project.path / "test_plain.py").write_text("def test_plain():\n    pass\n", encoding="utf-8")
    result = project.runpytest_inprocess("test_plain.py", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK and "Markdown" not in result.stdout.str()
    assert job_summary.read_text(encoding="utf-8") == text  # a run of no spec leaves the job page alone
