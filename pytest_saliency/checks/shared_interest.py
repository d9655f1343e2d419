"""``shared_interest`` checks: thresholds on aggregates of IoU, GTC and SC."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._constants import PATTERN_NAMES
from .._io import json_number
from ..metrics.patterns import behaviour_patterns
from ..report.results import OutcomeExtra, WorstRow
from ..spec.schema import SharedInterestCheck
from ..streaming import Shard
from .aggregation import measure
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest, ConfigT
from .samples import Cell, label_and_prediction, per_sample_json, sample_table, worst_positions


def statistics(shard: Shard, config: SharedInterestCheck, method: str | None) -> dict[str, Tensor]:
    """``iou``, ``gtc``, ``sc``, ``sc_continuous``: ``(B,)`` each, NaN where undefined."""
    assert method is not None
    return shard.shared_interest(method).as_dict()


def decide(request: CheckRequest[SharedInterestCheck]) -> Outcome:
    config = request.config
    assert request.method is not None, "a kind with attributions has a method"
    engine = request.engine
    scores = request.statistics
    selection = request.selection
    positions = selection.nonzero().flatten()
    indices = request.indices
    chosen = {name: values[selection] for name, values in scores.items()}
    measured = [
        (metric, measure(f"{metric}.{how}", chosen[metric], how, threshold, engine.spec.seed))
        for metric, thresholds in config.metrics().items()
        for how, threshold in thresholds.items()
    ]
    measurements = [measurement for _, measurement in measured]
    used = list(config.metrics())
    undefined = int(torch.stack([chosen[m].isnan() for m in used]).any(dim=0).sum())
    metric, focus = next(((metric, m) for metric, m in measured if not m.passed), measured[0])
    wants_high = focus.threshold.wants_high
    details = request.no_samples() + [f"worst samples by {metric} (of {len(indices)}; {undefined} undefined):"]
    worst = worst_rows(request, chosen, positions, metric, wants_high)
    details += worst_table(worst)
    extra: OutcomeExtra = {
        "per_sample": per_sample_json(indices, chosen),
        "worst": worst,  # the report's thumbnails are added to these rows (report/thumbnails.py)
        "worst_by": metric,
    }
    return Outcome(measurements, samples=len(indices), undefined=undefined, details=details, extra=extra)


def worst_table(rows: list[WorstRow]) -> list[str]:
    """:func:`worst_rows` as fixed-width lines (undefined scores read ``nan``)."""

    def score(value: float | None) -> float:
        return math.nan if value is None else value

    shown: list[dict[str, Cell]] = [
        {
            "sample": row["index"],
            "label": row["label"],
            "predicted": row["predicted"],
            "iou": score(row["iou"]),
            "gtc": score(row["gtc"]),
            "sc": score(row["sc"]),
            "patterns": ",".join(row["patterns"]) or "-",
        }
        for row in rows
    ]
    return sample_table(shown, ["sample", "label", "predicted", "iou", "gtc", "sc", "patterns"])


def worst_rows(
    request: CheckRequest[ConfigT], chosen: dict[str, Tensor], positions: Tensor, metric: str, wants_high: bool
) -> list[WorstRow]:
    """The (at most :data:`WORST_SHOWN`) samples furthest on the wrong side of ``metric`` among
    ``chosen`` ``(M,)`` scores of the samples at ``positions`` of the pass's result, as
    JSON-serialisable rows: index, label, predicted, iou, gtc, sc (None when undefined), patterns."""
    result = request.result
    patterns = behaviour_patterns(chosen["iou"], chosen["gtc"], chosen["sc"], result.correct[positions])
    rows = []
    for position in worst_positions(chosen[metric], wants_high):
        at = int(positions[position])
        label, predicted = label_and_prediction(request, at)
        iou, gtc, sc = (json_number(float(chosen[m][position])) for m in ("iou", "gtc", "sc"))
        hits = [n for n, hit in zip(PATTERN_NAMES, patterns[position].tolist(), strict=True) if hit]
        rows.append(
            WorstRow(
                index=int(result.indices[at]), label=label, predicted=predicted, iou=iou, gtc=gtc, sc=sc, patterns=hits
            )
        )
    return rows


KIND = CheckKind("shared_interest", SharedInterestCheck, statistics, decide)
