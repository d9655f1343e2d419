"""The end-of-run lines about drift snapshots: what an update run wrote, which stored snapshots
no check names, and where the obtained summaries of mismatches are."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .settings import BaselineSettings

if TYPE_CHECKING:
    from ..report.results import ItemResult

ACTIONS: tuple[str, ...] = ("created", "updated", "unchanged")
"""What an update run did to a snapshot (a compare-only run records ``compared``)."""


def _shown(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path


def summary_lines(results: Iterable[ItemResult], settings: BaselineSettings) -> list[str]:
    """End-of-run lines: in an update run, how many snapshots were created, updated and left
    unchanged (and which stored ones no check of the run's specs names: never deleted); in any
    run, where the obtained summaries of drift mismatches were written.

    ``results``: the run's JSON results; a drift item's snapshot entry is under ``"baseline"``
    (the key of the results file, kept for its readers)."""
    entries = [entry for result in results if (entry := result.get("baseline")) is not None]
    lines = []
    if settings.updating:
        counts = {action: sum(1 for entry in entries if entry.get("action") == action) for action in ACTIONS}
        folders = sorted({_shown(entry["folder"]) for entry in entries if entry.get("folder")})
        where = f" in {', '.join(folders)}" if folders else ""
        lines.append(
            f"saliency baselines (--saliency-update-mode={settings.mode}): "
            + ", ".join(f"{counts[action]} {action}" for action in ACTIONS)
            + where
        )
        unused = sorted({name for entry in entries for name in entry.get("unused", ())})
        if unused:
            shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
            lines.append(
                f"saliency baselines named by no check of these specs (kept, delete by hand if stale): {shown}"
            )
    obtained = sorted({_shown(entry["obtained"]) for entry in entries if entry.get("obtained")})
    if obtained:
        lines.append("saliency drift mismatches, obtained summaries written to:")
        lines += [f"  {path}" for path in obtained]
    return lines
