"""Every output of a run: ``--saliency-json`` (:mod:`.results`), ``--saliency-report``
(:mod:`.html`) and ``--saliency-markdown`` / ``$GITHUB_STEP_SUMMARY`` (:mod:`.markdown`), all
from the one results document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .format import shown_path
from .html import ReportDependencyError, write_html
from .markdown import append_step_summary, markdown_summary, write_markdown
from .results import build_document, write_document


def write_run_outputs(
    results: Iterable[dict[str, Any]],
    *,
    report_path: str | None = None,
    json_path: str | None = None,
    markdown_path: str | None = None,
    step_summary: str | None = None,
    overrides: Iterable[str] = (),
) -> list[str]:
    """Write ``--saliency-json``, ``--saliency-report`` and ``--saliency-markdown`` for a run's
    results, and append the Markdown to the ``step_summary`` file; returns lines for the terminal
    (the paths written, or why one could not be written). Never raises for an unwritable path or
    a missing Jinja2: the test outcomes matter more than the report."""
    document = build_document(results, artifacts=[shown_path(report_path)] if report_path else [], overrides=overrides)
    lines = []
    if json_path:
        try:
            write_document(json_path, document)
            lines.append(f"saliency results (JSON): {shown_path(json_path)}")
        except OSError as error:
            lines.append(f"saliency results (JSON): could not write {shown_path(json_path)}: {error}")
    if report_path:
        try:
            write_html(report_path, document)
            lines.append(f"saliency report (HTML): {shown_path(report_path)}")
        except (OSError, ReportDependencyError) as error:
            lines.append(f"saliency report (HTML): could not write {shown_path(report_path)}: {error}")
        except Exception as error:  # noqa: BLE001  (a rendering bug must not turn the run into an internal error)
            lines.append(
                f"saliency report (HTML): could not render {shown_path(report_path)}: {type(error).__name__}: {error}"
            )
    if markdown_path or step_summary:
        lines += _markdown_outputs(document, markdown_path, step_summary)
    return lines


def _markdown_outputs(document: dict[str, Any], path: str | None, step_summary: str | None) -> list[str]:
    text = markdown_summary(document["results"], document["summary"])
    lines = []
    for target, write, done in (
        (path, write_markdown, "saliency summary (Markdown)"),
        (step_summary, append_step_summary, "saliency summary (Markdown) appended to"),
    ):
        if target:
            try:
                write(target, text)
                lines.append(f"{done}: {shown_path(target)}")
            except OSError as error:
                lines.append(f"{done}: could not write {shown_path(target)}: {error}")
    return lines
