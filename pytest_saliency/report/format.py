"""How the reports show values: numbers, measured values with their intervals, and paths.

One set of formatters for every output (failure text, terminal summary, HTML page, junit
properties), so that a value reads the same wherever it is shown. Undefined values arrive as
``None`` (results pass through :func:`~pytest_saliency._io.json_safe` first); tables show them as
:data:`DASH`, sentences as :data:`UNDEFINED`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import MeasurementResult

DASH = "—"
UNDEFINED = "undefined"


def fixed(value: object, digits: int = 4, undefined: str = DASH) -> str:
    """``0.3301``: a number with ``digits`` decimals; ``undefined`` for None; anything else (a
    label, a bool) as its ``str``."""
    if value is None:
        return undefined
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}"


def significant(value: float | None, digits: int = 4, undefined: str = UNDEFINED) -> str:
    """``0.3301``, ``1.2e-05``: a number with ``digits`` significant digits (``g`` format)."""
    return undefined if value is None else f"{value:.{digits}g}"


def signed(value: float | None, digits: int = 3) -> str:
    """``+0.125``: a shift, its sign always shown."""
    return DASH if value is None else f"{value:+.{digits}f}"


def percent(value: float | None) -> str:
    """``12.5 %`` for ``0.125``."""
    return DASH if value is None else f"{100 * value:.1f} %"


def with_interval(
    measurement: MeasurementResult, digits: int = 4, interval_digits: int | None = None, undefined: str = UNDEFINED
) -> str:
    """``0.3301 ± 0.0210``: a measurement's value and the half-width of its interval when it has one."""
    value = measurement["value"]
    if value is None:
        return undefined
    shown = fixed(value, digits)
    interval = measurement.get("interval")
    if interval is not None:
        shown += f" ± {fixed(interval, interval_digits or digits)}"
    return shown


def rounded(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits (junit properties read 0.64, not
    0.6399999856948853); NaN stays NaN."""
    return float(f"{value:.{digits}g}")


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative
