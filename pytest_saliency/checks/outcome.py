"""What a check item gives back: each measured value against its threshold (:class:`Measurement`)
and the item's :class:`Outcome`."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from ..report.results import MeasurementResult, OutcomeExtra, OutcomeResult
from ..spec.schema import Threshold


def measurement_key(name: str) -> str:
    """A label as a key: up to its first `` (``, lower case, runs of other characters as ``_``
    except the dots of ``metric.aggregate`` (``"gap (AUC LIF - AUC MIF)"`` -> ``gap``,
    ``"fraction distractor"`` -> ``fraction_distractor``, ``"iou.mean"`` -> ``iou.mean``)."""
    head = name.split(" (", 1)[0].lower()
    return re.sub(r"[^a-z0-9.]+", "_", head).strip("_") or "value"


@dataclass(frozen=True)
class Measurement:
    """One measured value against its threshold.

    ``lower`` / ``upper``: the 95 % interval's bounds when known, and ``interval`` its half-width
    ``(upper - lower) / 2`` (what is shown as ``value ± interval``); ``samples``: how many samples
    the value is from. ``passed`` is the decision; under ``decide: interval`` a measurement whose
    interval straddles the threshold is ``inconclusive`` (and not passed), and ``needed`` is
    roughly how many samples would make it conclusive (None when no number would). ``name`` is
    the label shown (``gap (AUC LIF - AUC MIF)``), ``key`` what a program matches (``gap``): by
    default :func:`measurement_key` of the name."""

    name: str
    value: float
    threshold: Threshold
    passed: bool
    interval: float | None = None
    lower: float | None = None
    upper: float | None = None
    samples: int | None = None
    inconclusive: bool = False
    needed: int | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", measurement_key(self.name))

    @classmethod
    def compare(
        cls,
        name: str,
        value: float,
        threshold: Threshold,
        interval: float | None = None,
        *,
        bounds: tuple[float, float] | None = None,
        samples: int | None = None,
        key: str = "",
    ) -> Measurement:
        """The point decision of ``value`` against ``threshold``; the interval is given as a
        half-width around the value (``interval``) or as its ``bounds``."""
        if bounds is None and interval is not None:
            bounds = (value - interval, value + interval)
        if bounds is not None and interval is None:
            interval = (bounds[1] - bounds[0]) / 2
        lower, upper = bounds if bounds is not None else (None, None)
        return cls(name, value, threshold, threshold.passes(value), interval, lower, upper, samples, key=key)

    def by_interval(self) -> Measurement:
        """This measurement decided by its interval: ``>= x`` passes when the lower bound does,
        fails when the upper bound does not, and is otherwise inconclusive (``<=`` the mirror
        image). Without an interval (``min``, ``max``) the point decision stands; an undefined
        interval (fewer than two samples) is inconclusive. See docs/methods.md, "Intervals and decisions"."""
        if self.interval is None or math.isnan(self.value):
            return self
        if self.lower is None or self.upper is None or math.isnan(self.lower) or math.isnan(self.upper):
            return replace(self, passed=False, inconclusive=True, needed=None)
        rule = self.threshold
        near, far = (self.lower, self.upper) if rule.wants_high else (self.upper, self.lower)
        if rule.passes(near):
            return replace(self, passed=True, inconclusive=False)
        if not rule.passes(far):
            return replace(self, passed=False, inconclusive=False)
        toward = self.lower if self.value > rule.value else self.upper  # the bound on the threshold's side
        return replace(self, passed=False, inconclusive=True, needed=self._needed(abs(toward - self.value)))

    def _needed(self, half: float) -> int | None:
        """Samples for the interval's half-width toward the threshold (the passing side's when
        the value passes, the failing side's when it fails: asymmetric intervals differ) to
        shrink below the distance to the threshold, if it shrinks as ``1/sqrt(n)``."""
        distance = abs(self.value - self.threshold.value)
        if not self.samples or distance == 0.0:
            return None
        return max(self.samples + 1, math.ceil(self.samples * (half / distance) ** 2))

    @property
    def status(self) -> str:
        """ok | failed | inconclusive"""
        return "ok" if self.passed else ("inconclusive" if self.inconclusive else "failed")

    def to_dict(self) -> MeasurementResult:
        out: MeasurementResult = {
            "name": self.name,
            "key": self.key,
            "value": None if math.isnan(self.value) else self.value,
            "threshold": str(self.threshold),
            "passed": self.passed,
            "interval": self.interval,
        }
        if self.lower is not None and self.upper is not None:
            out["lower"], out["upper"] = self.lower, self.upper
        if self.samples is not None:
            out["samples"] = self.samples
        if self.inconclusive:
            out["inconclusive"], out["needed_samples"] = True, self.needed
        return out


@dataclass(frozen=True)
class Outcome:
    """The result of one check item: measurements, sample counts, lines for a failure message
    (``details``) and JSON-serialisable data for reports (``extra``). A new outcome is made for
    each later step (:meth:`decided`, :meth:`extended`); none is changed once made."""

    measurements: list[Measurement]
    samples: int
    undefined: int = 0
    details: list[str] = field(default_factory=list)
    extra: OutcomeExtra = field(default_factory=lambda: OutcomeExtra())

    @property
    def passed(self) -> bool:
        """Every measurement passed, over at least one sample."""
        return self.samples > 0 and bool(self.measurements) and all(m.passed for m in self.measurements)

    @property
    def inconclusive(self) -> bool:
        """No measurement failed, and at least one could not be decided by its interval."""
        return any(m.inconclusive for m in self.measurements) and all(
            m.passed or m.inconclusive for m in self.measurements
        )

    def decided(self, decide: Literal["point", "interval"]) -> Outcome:
        """This outcome with its measurements decided by point (as measured) or by ``interval``."""
        measurements = [m.by_interval() for m in self.measurements] if decide == "interval" else self.measurements
        extra: OutcomeExtra = {**self.extra, "decide": decide}
        return replace(self, measurements=measurements, extra=extra)

    def extended(self, details: Sequence[str] = (), extra: OutcomeExtra | None = None) -> Outcome:
        """This outcome with more ``details`` lines and ``extra`` keys."""
        more: OutcomeExtra = {**self.extra, **(extra or OutcomeExtra())}
        return replace(self, details=[*self.details, *details], extra=more)

    def to_dict(self) -> OutcomeResult:
        result = {
            "passed": self.passed,
            "samples": self.samples,
            "undefined": self.undefined,
            "measurements": [m.to_dict() for m in self.measurements],
            "details": self.details,
            **self.extra,
        }
        return cast(OutcomeResult, result)  # the keys of both TypedDicts, which mypy cannot join
