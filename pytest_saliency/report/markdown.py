"""The run's summary as GitHub-flavoured Markdown: ``--saliency-markdown PATH``, and appended to
the file ``$GITHUB_STEP_SUMMARY`` names (GitHub Actions shows it on the run's page).

Per spec: its name and path, the weights tested and their hash, then one row per measurement
(item, status, measured, value ± interval, threshold), failures first. Built from the results
document alone, as every report is, so a new check kind shows here with no change.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._io import write_atomic
from .format import DASH
from .results import ItemResult, MeasurementResult
from .terminal import measurement_status

STATUS_ORDER = ("error", "failed", "inconclusive", "warned", "passed")
"""Rows of items in this order of status: what needs attention first."""


def markdown_summary(results: Iterable[ItemResult], counts: Mapping[str, int]) -> str:
    """The Markdown text for these item results (``results`` of the results document, JSON-safe
    already) and the document's ``summary`` counts."""
    rows = list(results)
    tally = ", ".join(f"{counts[status]} {status}" for status in STATUS_ORDER if counts.get(status))
    lines = ["## Saliency checks", "", f"{counts.get('total', len(rows))} items: {tally or 'none run'}", ""]
    by_spec: dict[str, list[ItemResult]] = {}
    for result in rows:
        by_spec.setdefault(result["spec"], []).append(result)
    for spec, items in by_spec.items():
        lines += _spec_section(spec, items)
    return "\n".join(lines)


def _spec_section(spec: str, items: list[ItemResult]) -> list[str]:
    path = items[0]["spec_path"]
    lines = [f"### {_cell(spec)}" + (f" (`{path}`)" if path else ""), ""]
    weights = next((weights for item in items if (weights := item.get("weights"))), None)
    if weights:
        lines += [f"weights `{weights['path']}` sha256 `{weights['sha256']}`", ""]
    lines += ["| item | status | measured | value | threshold |", "|---|---|---|---:|---|"]
    ordered = sorted(items, key=lambda item: STATUS_ORDER.index(item["status"]))  # stable: spec order within
    for item in ordered:
        test_id = item["check"] + (f"[{item['variant']}]" if item.get("variant") else "")
        measurements = item["measurements"]
        if not measurements:
            lines.append(f"| `{_cell(test_id)}` | {item['status']} | {DASH} | {_cell(item.get('message') or '')} | |")
        failing_first = sorted(measurements, key=lambda m: bool(m.get("passed")))
        for measurement in failing_first:
            lines.append(
                f"| `{_cell(test_id)}` | {measurement_status(measurement, item['status'])} "
                f"| {_cell(measurement['name'])} | {_value(measurement)} | {_cell(measurement['threshold'])} |"
            )
    return [*lines, ""]


def _value(measurement: MeasurementResult) -> str:
    value, interval = measurement.get("value"), measurement.get("interval")
    if value is None:
        return DASH
    return f"{value:.4f}" + (f" ± {interval:.3f}" if interval is not None else "")


def _cell(text: str) -> str:
    """``text`` safe in a table cell: pipes escaped, one line."""
    return " ".join(str(text).replace("|", "\\|").split())


def write_markdown(path: str | os.PathLike[str], text: str) -> Path:
    """Write the summary to ``path`` (atomically)."""
    return write_atomic(path, text)


def append_step_summary(path: str | os.PathLike[str], text: str) -> Path:
    """Append the summary to the job summary file ``path`` (what earlier steps wrote stays)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(("\n" if handle.tell() else "") + text)
    return Path(path)
