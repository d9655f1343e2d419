"""What a check takes and gives back.

A check module (``pytest_saliency.checks.<kind>``) has two functions:

- ``statistics(shard, check, method) -> {name: (B, ...) tensor}``: the per-sample statistics of
  one shard (:class:`~pytest_saliency.streaming.Shard`), pure tensor code on the shard's device;
- ``decide(request) -> Outcome``: the item's outcome from the merged statistics of every shard
  (``request.statistics``, ``(N, ...)``), for the item's class or slice (``request.selection``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, TypeVar, cast

import numpy as np
import torch
from torch import Tensor

from .._io import json_number
from ..baselines import BaselineSettings
from ..engine import SpecEngine
from ..errors import Location, SpecRuntimeError, did_you_mean
from ..memory import run_with_half_batch_retry
from ..metrics.intervals import mean_interval, quantile_interval
from ..report.results import MeasurementResult, OutcomeExtra, OutcomeResult
from ..spec.schema import CheckSpec, Threshold
from ..spec.validate import format_location
from ..streaming import Need, PassResult, Shard

T = TypeVar("T")


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


@dataclass
class Outcome:
    """The result of one check item: measurements, sample counts, lines for a failure message
    (``details``) and JSON-serialisable data for reports (``extra``)."""

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
        if decide == "interval":
            self.measurements = [m.by_interval() for m in self.measurements]
        self.extra["decide"] = decide
        return self

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


@dataclass(frozen=True)
class CheckRequest:
    """One item's question: this check, for this method (if any) and class (if per class), with
    the merged per-sample statistics of the spec's pass (``result``)."""

    engine: SpecEngine
    check: CheckSpec
    method: str | None
    class_index: int | None
    result: PassResult
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    """Where drift snapshots live and whether this run may write them."""
    slice_value: str | None = None
    """With ``slices``: the value of the per-sample field this item looks at."""

    @property
    def need(self) -> Need:
        return Need(self.engine.spec.checks.index(self.check), self.method)

    @property
    def statistics(self) -> dict[str, Tensor]:
        """This check's per-sample ``(N, ...)`` statistics for this method, all samples."""
        return self.result.of(self.need)

    @property
    def location(self) -> Location:
        """Where the check's block is in the spec: ``("checks", i, kind)``."""
        return ("checks", self.need.check_index, self.check.kind)

    @cached_property
    def selection(self) -> Tensor:
        """``(N,) bool``: the samples this item looks at (one class or one slice, or all)."""
        labels = self.result.labels
        chosen = torch.ones_like(labels, dtype=torch.bool) if self.class_index is None else labels == self.class_index
        if self.slice_value is not None:
            chosen &= torch.from_numpy(self._slice_field() == self.slice_value)
        return chosen

    @property
    def indices(self) -> Tensor:
        """``(M,)`` the data set positions of the selected samples."""
        return self.result.indices[self.selection]

    def no_samples(self) -> list[str]:
        """``["no samples of class 'cat'"]`` (or ``of slice site=A``) when the item's class or slice
        has no samples (its outcome then fails), else ``[]``: the first line of its details."""
        if bool(self.selection.any()):
            return []
        if self.slice_value is not None:
            slices = getattr(self.check.config, "slices", None)
            assert slices is not None
            return [f"no samples of slice {slices.by}={self.slice_value}"]
        classes = self.engine.spec.data.classes
        index = self.class_index
        named = classes[index] if classes and index is not None and index < len(classes) else index
        return [f"no samples of class {named!r}"]

    def _slice_field(self) -> np.ndarray:
        slices = getattr(self.check.config, "slices", None)
        assert slices is not None
        fields = self.result.fields
        if slices.by not in fields:
            where = (*self.location, "slices", "by")
            named = ", ".join(fields) or "none"
            raise SpecRuntimeError(
                where,
                f"the data has no per-sample field {slices.by!r}{did_you_mean(slices.by, fields)}; its fields: {named}",
            )
        return fields[slices.by]


def check_location(shard: Shard, check: CheckSpec) -> Location:
    """``("checks", i, kind)``: where ``check`` is in the shard's spec."""
    return ("checks", shard.spec.checks.index(check), check.kind)


def run_in_batches(shard: Shard, check: CheckSpec, own_batch_size: int | None, run: Callable[[int], T]) -> T:
    """``run(batch_size)`` at the check's own ``batch_size`` (else ``data.batch_size``), retried
    once at half the batch when it runs out of memory; out of memory again is one line at the
    check's block that names the setting to lower."""
    location = check_location(shard, check)
    setting = f"{format_location(location)}.batch_size" if own_batch_size else "data.batch_size"
    return run_with_half_batch_retry(run, own_batch_size or shard.worker.batch_size, location, setting)


def aggregate(values: Tensor, how: str) -> float:
    """``mean | median | min | max | pNN`` over the defined (non-NaN) values; NaN if none."""
    defined = values[~torch.isnan(values)].double()
    if defined.numel() == 0:
        return math.nan
    if how == "mean":
        return float(defined.mean())
    if how == "median":
        return float(defined.quantile(0.5))
    if how == "min":
        return float(defined.min())
    if how == "max":
        return float(defined.max())
    return float(defined.quantile(int(how[1:]) / 100))


def measure(name: str, values: Tensor, how: str, threshold: Threshold, seed: int) -> Measurement:
    """``how`` (:func:`aggregate`) of ``(M,)`` values against ``threshold``, with its 95 % interval
    over the defined values: Student's t for a mean, a percentile bootstrap seeded with ``seed``
    for a median or percentile, none for ``min`` / ``max`` (docs/methods.md, "Intervals and decisions")."""
    defined = values[~torch.isnan(values)].double()
    value = aggregate(values, how)
    if how in ("min", "max"):
        return Measurement.compare(name, value, threshold, samples=defined.numel())
    if how == "mean":
        lower, upper = mean_interval(defined)
    else:
        q = 0.5 if how == "median" else int(how[1:]) / 100
        lower, upper = quantile_interval(defined, q, generator=torch.Generator().manual_seed(seed))
    return Measurement.compare(name, value, threshold, bounds=(float(lower), float(upper)), samples=defined.numel())


WORST_SHOWN = 5
"""How many samples a failure lists."""


def worst_positions(values: Tensor, wants_high: bool) -> list[int]:
    """Positions of the (at most :data:`WORST_SHOWN`) ``(M,)`` values furthest on the wrong side
    of a threshold: the lowest when high values are wanted, else the highest; NaN (undefined)
    last; ties in order (a stable sort)."""
    ranked = values.nan_to_num(nan=math.inf if wants_high else -math.inf)
    return torch.argsort(ranked, descending=not wants_high, stable=True)[:WORST_SHOWN].tolist()


def label_and_prediction(request: CheckRequest, position: int) -> dict[str, Any]:
    """``{"label": ..., "predicted": ...}`` of the sample at ``position`` of the pass's result,
    as class names when the spec names the classes."""
    classes = request.engine.spec.data.classes
    result = request.result

    def name(value: int) -> Any:
        return classes[value] if classes and value < len(classes) else value

    return {"label": name(int(result.labels[position])), "predicted": name(int(result.predictions[position]))}


def json_floats(values: Tensor) -> list[float | None]:
    """``(M,)`` values as JSON numbers rounded to 6 decimals; NaN (undefined) becomes ``None``."""
    return [json_number(v) for v in values.tolist()]


def per_sample_json(indices: Tensor, scores: dict[str, Tensor]) -> dict[str, list[Any]]:
    """The ``per_sample`` block of a JSON result: the samples' ``(M,)`` ``indices`` under
    ``"index"``, then each ``(M,)`` score under its name (:func:`json_floats`)."""
    return {"index": indices.tolist(), **{name: json_floats(values) for name, values in scores.items()}}


def sample_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Fixed-width text lines for a few samples (the worst examples in a failure)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    if not rows:
        return []
    widths = {c: max(len(c), *(len(cell(row[c])) for row in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(row[c]).rjust(widths[c]) for c in columns) for row in rows]
    return lines


def worst_sample_lines(
    request: CheckRequest,
    chosen: dict[str, Tensor],
    positions: Tensor,
    metric: str,
    wants_high: bool,
    names: dict[str, str] | None = None,
) -> list[str]:
    """Table lines for the samples furthest on the wrong side of ``metric`` among ``chosen``
    ``(M,)`` scores of the samples at ``positions`` of the pass's result (undefined last): sample,
    label, predicted and every score, under its name in ``names`` if there is one."""
    names = names or {}
    rows = []
    for position in worst_positions(chosen[metric], wants_high):
        at = int(positions[position])
        row: dict[str, Any] = {"sample": int(request.result.indices[at]), **label_and_prediction(request, at)}
        row.update({names.get(name, name): float(values[position]) for name, values in chosen.items()})
        rows.append(row)
    return sample_table(rows, ["sample", "label", "predicted", *(names.get(name, name) for name in chosen)])


def score_outcome(
    request: CheckRequest,
    scores: dict[str, Tensor],
    thresholds: dict[str, dict[str, Threshold]],
    heading: str,
    extra: OutcomeExtra | None = None,
    *,
    names: dict[str, str] | None = None,
    counted: str = "",
) -> Outcome:
    """The outcome of a check whose thresholds are aggregates of per-sample ``(N,)`` scores:
    every ``metric.aggregate`` over the request's samples against its threshold, with its 95 %
    interval (:func:`measure`), the number of samples with an undefined score, and the worst
    samples by the first failing metric (else the first one) after the line ``heading`` (which
    ends with the sample counts and ``counted``, e.g. ``", 2 with an empty region"``), their
    scores under their ``names`` (:func:`worst_sample_lines`); the JSON result carries every
    selected sample's scores."""
    selection = request.selection
    positions = selection.nonzero().flatten()
    indices = request.indices
    chosen = {name: values[selection] for name, values in scores.items()}
    seed = request.engine.spec.seed
    measurements = [
        measure(f"{metric}.{how}", chosen[metric], how, threshold, seed)
        for metric, by_aggregate in thresholds.items()
        for how, threshold in by_aggregate.items()
    ]
    undefined = int(torch.stack([values.isnan() for values in chosen.values()]).any(dim=0).sum())
    focus = next((m for m in measurements if not m.passed), measurements[0])
    metric, how = focus.name.rsplit(".", 1)
    wants_high = thresholds[metric][how].wants_high
    details = request.no_samples() + [
        f"{heading}; samples with the {'smallest' if wants_high else 'largest'} {metric} "
        f"(of {len(indices)}; {undefined} undefined{counted}):"
    ]
    details += worst_sample_lines(request, chosen, positions, metric, wants_high, names)
    return Outcome(
        measurements,
        samples=len(indices),
        undefined=undefined,
        details=details,
        extra={"per_sample": per_sample_json(indices, chosen), **(extra or OutcomeExtra())},
    )
