"""The end-of-session summary: one rich table per spec, rendered to the terminal's width."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

STATUS_STYLE = {
    "passed": "green",
    "ok": "green",
    "failed": "bold red",
    "warned": "yellow",
    "inconclusive": "yellow",
    "error": "bold red",
}


def summary_table(results: Iterable[dict[str, Any]], width: int, markup: bool) -> str:
    """Per spec, its name and path, the weights file tested and its sha256, then a row per check
    item (its test id and status) followed by a row per measurement (value ± interval, threshold,
    ok/failed/inconclusive). Coloured only when ``markup`` (``--color``)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    by_spec: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_spec.setdefault(result["spec"], []).append(result)
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
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column("check / measured", overflow="fold")
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("threshold", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for result in rows:
            test_id = result["check"] + (f"[{result['variant']}]" if result.get("variant") else "")
            table.add_row(escape(test_id), "", "", _status(result["status"], markup))
            measurements = result.get("measurements") or [
                {"name": result.get("message", ""), "value": None, "threshold": "", "passed": False}
            ]
            for measurement in measurements:
                status = _measurement_status(measurement, result["status"])
                table.add_row(
                    "  " + escape(measurement["name"]), _value(measurement), escape(measurement["threshold"]), _status(status, markup)
                )
        console.print(table)
    return buffer.getvalue()


def _status(status: str, markup: bool) -> str:
    style = STATUS_STYLE.get(status) if markup else None
    return f"[{style}]{status}[/]" if style else status


def _measurement_status(measurement: dict[str, Any], item_status: str) -> str:
    if measurement.get("passed"):
        return "ok"
    if measurement.get("inconclusive"):
        return "inconclusive"
    return "failed" if item_status in ("passed", "inconclusive") else item_status


def _value(measurement: dict[str, Any]) -> str:
    from .text import shown_value

    return "—" if measurement["value"] is None else shown_value(measurement, 4, 3)
