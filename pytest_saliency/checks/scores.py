"""The outcome of a kind whose thresholds are aggregates of per-sample scores."""

from __future__ import annotations

import torch
from torch import Tensor

from ..report.results import OutcomeExtra
from ..spec.schema import Threshold
from .aggregation import measure
from .outcome import Outcome
from .request import CheckRequest, ConfigT
from .samples import per_sample_json, worst_sample_lines


def score_outcome(
    request: CheckRequest[ConfigT],
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
    measured = [
        (metric, measure(f"{metric}.{how}", chosen[metric], how, threshold, seed))
        for metric, by_aggregate in thresholds.items()
        for how, threshold in by_aggregate.items()
    ]
    measurements = [measurement for _, measurement in measured]
    undefined = int(torch.stack([values.isnan() for values in chosen.values()]).any(dim=0).sum())
    metric, focus = next(((metric, m) for metric, m in measured if not m.passed), measured[0])
    wants_high = focus.threshold.wants_high
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
