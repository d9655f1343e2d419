"""What pytest prints: an item's failure block (what ``repr_failure`` returns) and the
end-of-session summary, one rich table per spec rendered to the terminal's width.

Results pass through :func:`~pytest_saliency._io.json_safe` first, so an undefined value is
``None`` here whatever the check gave (NaN included).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

from .._io import json_safe
from ..spec.schema import Threshold
from .format import DASH, UNDEFINED, fixed, significant, with_interval
from .results import ItemResult, MeasurementResult, OutcomeResult


def failure_text(location: str, title: str, outcome: OutcomeResult) -> str:
    """``path:line: title`` then a measured-vs-threshold table, the sample counts and details."""
    result: OutcomeResult = json_safe(outcome)
    rows = [("measured", "value", "threshold", "status")]
    for measurement in result["measurements"]:
        rows.append(
            (measurement["name"], with_interval(measurement, 4), measurement["threshold"], _failure_status(measurement))
        )
    failing = [m for m in result["measurements"] if not m["passed"]]
    summary = "; ".join(_why(m) for m in failing) or ("no samples" if not result["samples"] else "")
    lines = [f"{location}: {title}" + (f": {summary}" if summary else "")]
    lines += ["  " + line for line in _columns(rows)]
    undefined = f" ({result['undefined']} undefined, left out of the aggregates)" if result["undefined"] else ""
    lines.append(f"  samples: {result['samples']}{undefined}")
    lines += ["  " + line for line in result.get("details", [])]
    return "\n".join(lines)


def _failure_status(measurement: MeasurementResult) -> str:
    if measurement["passed"]:
        return "ok"
    return "INCONCLUSIVE" if measurement.get("inconclusive") else "FAIL"


def _why(measurement: MeasurementResult) -> str:
    text = f"{measurement['name']} = {significant(measurement['value'])}"
    if not measurement.get("inconclusive"):
        return f"{text} (want {measurement['threshold']})"
    lower, upper = measurement.get("lower"), measurement.get("upper")
    bounds = (
        f"interval [{significant(lower)}, {significant(upper)}] straddles"
        if lower is not None and upper is not None
        else "no interval for"
    )
    needed = measurement.get("needed_samples")
    now = measurement.get("samples")
    more = (
        f"about {needed} samples (now {now}) would likely decide it"
        if needed
        else "more samples would not decide it (the value sits on the threshold)"
        if lower is not None
        else "it needs at least 2 samples"
    )
    return f"{text}, {bounds} {measurement['threshold']}: {more}"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


# --- the end-of-session summary ---------------------------------------------------------------

STATUS_STYLE = {
    "passed": "green",
    "ok": "green",
    "failed": "bold red",
    "warned": "yellow",
    "inconclusive": "yellow",
    "error": "bold red",
}


def summary_table(results: Iterable[ItemResult], width: int, markup: bool) -> str:
    """Per spec, its name and path, the weights file tested and its sha256, then a row per check
    item (its test id and status) followed by a row per measurement (value ± interval, threshold,
    ok/failed/inconclusive). Coloured only when ``markup`` (``--color``)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    by_spec: dict[str, list[ItemResult]] = {}
    for result in results:
        safe: ItemResult = json_safe(result)
        by_spec.setdefault(result["spec"], []).append(safe)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=markup,
        no_color=not markup,
        color_system="standard" if markup else None,
        highlight=False,
    )
    for spec, rows in by_spec.items():
        path = rows[0].get("spec_path")
        console.print(escape(f"{spec} ({path})" if path else spec), soft_wrap=True)
        weights = next((result["weights"] for result in rows if result.get("weights")), None)
        if weights:  # the spec's name first: one line naming what was tested, whatever the terminal's width
            console.print(escape(f"{spec} weights {weights['path']} sha256:{weights['sha256'][:16]}"), soft_wrap=True)
        source = next((result["model_source"] for result in rows if result.get("model_source")), None)
        if source:  # which normalisation and transform were used, and where they came from
            for line in (f"normalize {source['normalize']}; transform {source['transform']}", *source["notes"]):
                console.print(escape(f"{spec} {line}"), soft_wrap=True)
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("check / measured", overflow="fold")
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("threshold", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for result in rows:
            test_id = result["check"] + (f"[{result['variant']}]" if result.get("variant") else "")
            table.add_row(escape(test_id), "", "", _status(result["status"], markup))
            measurements: list[MeasurementResult] = result.get("measurements") or [
                {"name": result.get("message", ""), "value": None, "threshold": "", "passed": False}
            ]
            for measurement in measurements:
                status = measurement_status(measurement, result["status"])
                table.add_row(
                    "  " + escape(measurement["name"]),
                    _value(measurement),
                    escape(measurement["threshold"]),
                    _status(status, markup),
                )
        console.print(table)
        for line in worst_slice_lines(rows):
            console.print(escape(line), soft_wrap=True)
    return buffer.getvalue()


def worst_slice_lines(results: Iterable[ItemResult]) -> list[str]:
    """Per sliced check and method, the slice whose measurement lies furthest on the wrong side of
    its threshold (or nearest to it, when all pass), e.g. ``worst slice of cov[grad]: camera=b
    gtc.mean 0.4100 (want >= 0.5) failed``. Undefined values are the worst."""
    groups: dict[tuple[str, str], list[ItemResult]] = {}
    for result in results:
        if result.get("slice"):
            groups.setdefault((result["check"], result.get("method") or ""), []).append(result)
    lines = []
    for (check, method), members in groups.items():
        candidates = [(_margin(m), result, m) for result in members for m in result.get("measurements") or []]
        if not candidates:
            continue
        _, result, measurement = min(candidates, key=lambda candidate: candidate[0])
        where = f"{check}[{method}]" if method else check
        value = fixed(measurement["value"], 4, undefined=UNDEFINED)
        slice_ = result.get("slice") or {"by": "", "value": ""}
        status = measurement_status(measurement, result["status"])
        lines.append(
            f"worst slice of {where} ({len(members)} slices): {slice_['by']}={slice_['value']} "
            f"{measurement['name']} {value} (want {measurement['threshold']}) {status}"
        )
    return lines


def _margin(measurement: MeasurementResult) -> float:
    """How far the value lies on the right side of its threshold (negative: the wrong side)."""
    value: float | None = measurement.get("value")
    try:
        threshold = Threshold.parse(measurement.get("threshold", ""))
    except ValueError:
        return -math.inf
    if value is None:
        return -math.inf
    return value - threshold.value if threshold.wants_high else threshold.value - value


def _status(status: str, markup: bool) -> str:
    style = STATUS_STYLE.get(status) if markup else None
    return f"[{style}]{status}[/]" if style else status


def measurement_status(measurement: MeasurementResult, item_status: str) -> str:
    """ok | inconclusive | failed, or the item's status (warned, error) for a measurement that failed."""
    if measurement.get("passed"):
        return "ok"
    if measurement.get("inconclusive"):
        return "inconclusive"
    return "failed" if item_status in ("passed", "inconclusive") else item_status


def _value(measurement: MeasurementResult) -> str:
    return with_interval(measurement, 4, 3, undefined=DASH)
