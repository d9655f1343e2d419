"""Plain-text failure blocks (what ``repr_failure`` returns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def failure_text(location: str, title: str, result: dict[str, Any]) -> str:
    """``path:line: title`` then a measured-vs-threshold table, the sample counts and details."""
    rows = [("measured", "value", "threshold", "status")]
    for measurement in result["measurements"]:
        value = measurement["value"]
        shown = "undefined" if value is None else f"{value:.4f}"
        if measurement.get("interval") is not None and value is not None:
            shown += f" ± {measurement['interval']:.4f}"
        rows.append((measurement["name"], shown, measurement["threshold"], "ok" if measurement["passed"] else "FAIL"))
    failing = [m for m in result["measurements"] if not m["passed"]]
    summary = "; ".join(
        f"{m['name']} = {'undefined' if m['value'] is None else format(m['value'], '.4g')} (want {m['threshold']})"
        for m in failing
    )
    lines = [f"{location}: {title}" + (f": {summary}" if summary else "")]
    lines += ["  " + line for line in _columns(rows)]
    undefined = f" ({result['undefined']} undefined, left out of the aggregates)" if result["undefined"] else ""
    lines.append(f"  samples: {result['samples']}{undefined}")
    lines += ["  " + line for line in result.get("details", [])]
    return "\n".join(lines)


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
