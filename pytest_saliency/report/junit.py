"""The ``--junitxml`` properties of a check item, for CI dashboards: each measurement's value,
threshold, interval and status under ``saliency.<label>``, and the item's status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .format import rounded

if TYPE_CHECKING:
    from ..checks.outcome import Outcome
    from .results import Status


def junit_properties(outcome: Outcome, status: Status) -> list[tuple[str, object]]:
    """``(name, value)`` pairs for pytest's ``user_properties``: the label as the summary and the
    reports show it, then ``.threshold``, ``.interval`` / ``.lower`` / ``.upper`` when the value
    has an interval, ``.status``; last ``saliency.status``."""
    properties: list[tuple[str, object]] = []
    for measurement in outcome.measurements:
        name = f"saliency.{measurement.name}"
        properties.append((name, rounded(measurement.value)))
        properties.append((f"{name}.threshold", str(measurement.threshold)))
        if measurement.interval is not None and measurement.lower is not None and measurement.upper is not None:
            properties.append((f"{name}.interval", rounded(measurement.interval)))
            properties.append((f"{name}.lower", rounded(measurement.lower)))
            properties.append((f"{name}.upper", rounded(measurement.upper)))
        properties.append((f"{name}.status", measurement.status))
    properties.append(("saliency.status", status))
    return properties
