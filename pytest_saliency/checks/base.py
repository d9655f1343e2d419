"""What a check evaluation takes and gives back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..baseline_session import BaselineSettings
from ..engine import SpecEngine
from ..spec.schema import CheckSpec, Threshold


@dataclass(frozen=True)
class Measurement:
    """One measured value against its threshold; ``interval`` is a ± half-width when known."""

    name: str
    value: float
    threshold: str
    passed: bool
    interval: float | None = None

    @classmethod
    def compare(cls, name: str, value: float, threshold: Threshold, interval: float | None = None) -> Measurement:
        return cls(name, value, str(threshold), threshold.passes(value), interval)

    def shown(self) -> str:
        if math.isnan(self.value):
            return "undefined"
        return f"{self.value:.4f}" + (f" ± {self.interval:.4f}" if self.interval is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if math.isnan(self.value) else self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "interval": self.interval,
        }


@dataclass
class Outcome:
    """The result of one check item: measurements, sample counts, lines for a failure message
    (``details``) and JSON-serialisable data for reports (``extra``)."""

    measurements: list[Measurement]
    samples: int
    undefined: int = 0
    details: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.measurements) and all(m.passed for m in self.measurements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "samples": self.samples,
            "undefined": self.undefined,
            "measurements": [m.to_dict() for m in self.measurements],
            "details": self.details,
            **self.extra,
        }


@dataclass(frozen=True)
class CheckRequest:
    """One item's question: this check, for this method (if any) and class (if per class)."""

    engine: SpecEngine
    check: CheckSpec
    method: str | None
    class_index: int | None
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    """Where drift baselines live and whether this run may write them."""

    @property
    def selection(self) -> Tensor:
        """``(N,) bool``: the samples this item looks at (one class, or all)."""
        labels = self.engine.data.labels
        if self.class_index is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels == self.class_index


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


WORST_SHOWN = 5
"""How many samples a failure lists."""


def worst_positions(values: Tensor, wants_high: bool) -> list[int]:
    """Positions of the (at most :data:`WORST_SHOWN`) ``(M,)`` values furthest on the wrong side
    of a threshold: the lowest when high values are wanted, else the highest; NaN (undefined)
    last; ties in order (a stable sort)."""
    ranked = values.nan_to_num(nan=math.inf if wants_high else -math.inf)
    return torch.argsort(ranked, descending=not wants_high, stable=True)[:WORST_SHOWN].tolist()


def label_and_prediction(engine: SpecEngine, index: int) -> dict[str, Any]:
    """``{"label": ..., "predicted": ...}`` of sample ``index``, as class names when the spec
    names the classes."""
    classes = engine.spec.data.classes

    def name(value: int) -> Any:
        return classes[value] if classes and value < len(classes) else value

    return {"label": name(int(engine.data.labels[index])), "predicted": name(int(engine.predictions[index]))}


def json_floats(values: Tensor) -> list[float | None]:
    """``(M,)`` values as JSON numbers rounded to 6 decimals; NaN (undefined) becomes ``None``."""
    return [None if v != v else round(v, 6) for v in values.tolist()]


def sample_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Fixed-width text lines for a few samples (the worst examples in a failure)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    widths = {c: max(len(c), *(len(cell(row[c])) for row in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(row[c]).rjust(widths[c]) for c in columns) for row in rows]
    return lines


def worst_sample_lines(
    engine: SpecEngine,
    chosen: dict[str, Tensor],
    indices: Tensor,
    metric: str,
    wants_high: bool,
    names: dict[str, str] | None = None,
) -> list[str]:
    """Table lines for the samples furthest on the wrong side of ``metric`` among ``chosen``
    ``(M,)`` scores of the samples ``indices`` (undefined last): sample, label, predicted and every
    score, under its name in ``names`` if there is one."""
    names = names or {}
    rows = []
    for position in worst_positions(chosen[metric], wants_high):
        index = int(indices[position])
        row: dict[str, Any] = {"sample": index, **label_and_prediction(engine, index)}
        row.update({names.get(name, name): float(values[position]) for name, values in chosen.items()})
        rows.append(row)
    if not rows:
        return []
    return sample_table(rows, ["sample", "label", "predicted", *(names.get(name, name) for name in chosen)])


def score_outcome(
    request: CheckRequest,
    scores: dict[str, Tensor],
    thresholds: dict[str, dict[str, Threshold]],
    heading: str,
    extra: dict[str, Any] | None = None,
) -> Outcome:
    """The outcome of a check whose thresholds are aggregates of per-sample ``(N,)`` scores:
    every ``metric.aggregate`` over the request's samples against its threshold, the number of
    samples with an undefined score, and the worst samples by the first failing metric (else the
    first one) after the line ``heading``; the JSON result carries every selected sample's scores."""
    selection = request.selection
    indices = selection.nonzero().flatten()
    chosen = {name: values[selection] for name, values in scores.items()}
    measurements = [
        Measurement.compare(f"{metric}.{how}", aggregate(chosen[metric], how), threshold)
        for metric, by_aggregate in thresholds.items()
        for how, threshold in by_aggregate.items()
    ]
    undefined = int(torch.stack([values.isnan() for values in chosen.values()]).any(dim=0).sum())
    focus = next((m for m in measurements if not m.passed), measurements[0])
    metric, how = focus.name.rsplit(".", 1)
    wants_high = thresholds[metric][how].wants_high
    details = [
        f"{heading}; samples with the {'smallest' if wants_high else 'largest'} {metric} "
        f"(of {len(indices)}; {undefined} undefined):"
    ]
    details += worst_sample_lines(request.engine, chosen, indices, metric, wants_high)
    per_sample = {"index": indices.tolist(), **{name: json_floats(values) for name, values in chosen.items()}}
    return Outcome(
        measurements, samples=len(indices), undefined=undefined, details=details,
        extra={"per_sample": per_sample, **(extra or {})},
    )
