"""``patterns`` checks: limits on the fraction of samples in each behaviour pattern."""

from __future__ import annotations

import torch
from torch import Tensor

from .._constants import PATTERN_NAMES
from ..metrics.intervals import wilson_interval
from ..metrics.patterns import behaviour_patterns, pattern_fractions
from ..spec.schema import PatternsCheck, Threshold
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Measurement, Outcome
from .request import CheckRequest
from .shared_interest import worst_rows, worst_table


def statistics(shard: Shard, config: PatternsCheck, method: str | None) -> dict[str, Tensor]:
    """The Shared Interest scores the patterns are made of (``(B,)`` each)."""
    assert method is not None
    return shard.shared_interest(method).as_dict()


def decide(request: CheckRequest[PatternsCheck]) -> Outcome:
    config = request.config
    assert request.method is not None, "a kind with attributions has a method"
    selection = request.selection
    positions = selection.nonzero().flatten()
    chosen = {name: values[selection] for name, values in request.statistics.items()}
    defined = ~(chosen["iou"].isnan() | chosen["gtc"].isnan() | chosen["sc"].isnan())
    patterns = behaviour_patterns(
        chosen["iou"],
        chosen["gtc"],
        chosen["sc"],
        request.result.correct[positions],
        low=config.levels.low,
        high=config.levels.high,
    )
    fractions = pattern_fractions(patterns[defined])
    limits = [(name, Threshold("<=", 0.0)) for name in config.forbid]
    limits += [
        (name, Threshold("<=", value)) for name, value in config.max_fraction.items() if name not in config.forbid
    ]
    limits += [(name, Threshold(">=", value)) for name, value in config.min_fraction.items()]
    counts = {
        name: int(total) for name, total in zip(PATTERN_NAMES, patterns[defined].sum(dim=0).tolist(), strict=True)
    }
    trials = int(defined.sum())
    lower, upper = wilson_interval(torch.tensor([counts[name] for name, _ in limits]), torch.tensor(trials))
    measurements = [
        Measurement.compare(
            f"fraction {name}", fractions[name], limit, bounds=(float(low), float(high)), samples=trials
        )
        for (name, limit), low, high in zip(limits, lower.tolist(), upper.tolist(), strict=True)
    ]
    details = request.no_samples() + [
        f"pattern counts over {int(defined.sum())} samples with defined scores ({int((~defined).sum())} undefined): "
        + ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    ]
    by_pattern = list(zip((name for name, _ in limits), measurements, strict=True))
    failing = [name for name, m in by_pattern if not m.passed and not m.threshold.wants_high]
    # The report's worst examples: samples of the first failing pattern, else of the first bounded
    # pattern that has any, else the lowest IoU overall.
    bounded = [name for name, m in by_pattern if not m.threshold.wants_high]
    shown = failing or [name for name in bounded if counts.get(name)]
    worst_in = shown[0] if shown else None
    if worst_in is not None:
        members = patterns[:, PATTERN_NAMES.index(worst_in)].nonzero().flatten()
        in_pattern = {name: values[members] for name, values in chosen.items()}
        worst = worst_rows(request, in_pattern, positions[members], "iou", wants_high=True)
    else:
        worst = worst_rows(request, chosen, positions, "iou", wants_high=True)
    if failing:
        details.append(f"samples in {failing[0]}:")
        details += worst_table(worst)
    return Outcome(
        measurements,
        samples=len(positions),
        undefined=int((~defined).sum()),
        details=details,
        extra={"pattern_counts": counts, "pattern_fractions": fractions, "worst": worst, "worst_in": worst_in},
    )


KIND = CheckKind("patterns", PatternsCheck, statistics, decide)
