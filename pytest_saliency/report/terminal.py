"""The end-of-session summary table, rendered with rich to the terminal's width."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

STATUS_STYLE = {"passed": "green", "failed": "bold red", "warned": "yellow", "error": "bold red", "skipped": "dim"}


def summary_table(results: Iterable[dict[str, Any]], width: int, markup: bool) -> str:
    """One row per measurement: spec, check, method, measured, threshold, status."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="saliency checks", title_justify="left", show_lines=False, expand=False)
    for column, justify in (("spec", "left"), ("check", "left"), ("method", "left"), ("measured", "left"),
                            ("value", "right"), ("threshold", "left"), ("status", "left")):  # fmt: skip
        table.add_column(column, justify=justify, overflow="fold")
    for result in results:
        status = result["status"]
        style = STATUS_STYLE.get(status, "")
        measurements = result.get("measurements") or [{"name": result.get("message", ""), "value": None, "threshold": "", "passed": False}]
        for position, measurement in enumerate(measurements):
            first = position == 0
            value = measurement["value"]
            shown = "—" if value is None else f"{value:.4f}"
            if measurement.get("interval") is not None and value is not None:
                shown += f" ± {measurement['interval']:.3f}"
            row_status = "ok" if status == "failed" and measurement.get("passed") else status
            table.add_row(
                escape(result["spec"]) if first else "",
                escape(result["check"]) if first else "",
                escape(result.get("variant", "")) if first else "",
                escape(measurement["name"]),
                shown,
                measurement["threshold"],
                f"[{STATUS_STYLE.get(row_status, '')}]{row_status}[/]" if markup and STATUS_STYLE.get(row_status) else row_status,
            )
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=markup, no_color=not markup, color_system="standard" if markup else None, highlight=False)
    console.print(table)
    return buffer.getvalue()
