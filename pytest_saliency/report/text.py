"""Plain-text failure blocks (what ``repr_failure`` returns)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def failure_text(location: str, title: str, result: dict[str, Any]) -> str:
    """``path:line: title`` then a measured-vs-threshold table, the sample counts and details."""
    rows = [("measured", "value", "threshold", "status")]
    for measurement in result["measurements"]:
        rows.append((measurement["name"], shown_value(measurement, 4), measurement["threshold"], _status(measurement)))
    failing = [m for m in result["measurements"] if not m["passed"]]
    summary = "; ".join(_why(m) for m in failing)
    lines = [f"{location}: {title}" + (f": {summary}" if summary else "")]
    lines += ["  " + line for line in _columns(rows)]
    undefined = f" ({result['undefined']} undefined, left out of the aggregates)" if result["undefined"] else ""
    lines.append(f"  samples: {result['samples']}{undefined}")
    lines += ["  " + line for line in result.get("details", [])]
    return "\n".join(lines)


def shown_value(measurement: dict[str, Any], digits: int, interval_digits: int | None = None) -> str:
    """``0.3301 ± 0.0210``: the value and the half-width of its interval when it has one."""
    value = measurement["value"]
    if value is None:
        return "undefined"
    shown = f"{value:.{digits}f}"
    interval = measurement.get("interval")
    if interval is not None and not math.isnan(interval):
        shown += f" ± {interval:.{interval_digits or digits}f}"
    return shown


def _status(measurement: dict[str, Any]) -> str:
    if measurement["passed"]:
        return "ok"
    return "INCONCLUSIVE" if measurement.get("inconclusive") else "FAIL"


def _why(measurement: dict[str, Any]) -> str:
    value = measurement["value"]
    text = f"{measurement['name']} = {'undefined' if value is None else format(value, '.4g')}"
    if not measurement.get("inconclusive"):
        return f"{text} (want {measurement['threshold']})"
    lower, upper = measurement.get("lower"), measurement.get("upper")
    bounds = f"interval [{lower:.4g}, {upper:.4g}]" if lower is not None and upper is not None and not math.isnan(lower) else "no interval"
    needed = measurement.get("needed_samples")
    now = measurement.get("samples")
    more = (
        f"about {needed} samples (now {now}) would likely decide it"
        if needed
        else "more samples would not decide it (the value sits on the threshold)"
        if lower is not None and not math.isnan(lower)
        else "it needs at least 2 samples"
    )
    return f"{text}, {bounds} straddles {measurement['threshold']}: {more}"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
