"""Every output of a run: ``--saliency-json`` (:mod:`.results`) and ``--saliency-report``
(:mod:`.html`), both from the one results document."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .format import shown_path
from .html import ReportDependencyError, write_html
from .results import build_document, write_document


def write_run_outputs(
    results: Iterable[dict[str, Any]],
    *,
    report_path: str | None = None,
    json_path: str | None = None,
    overrides: Iterable[str] = (),
) -> list[str]:
    """Write ``--saliency-json`` and ``--saliency-report`` for a run's results; returns lines for
    the terminal (the paths written, or why one could not be written). Never raises for an
    unwritable path or a missing Jinja2: the test outcomes matter more than the report."""
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
    return lines
