"""``complexity`` checks: thresholds on aggregates of each map's sparseness (Gini index) and
complexity (entropy); docs/methods.md, "Complexity"."""

from __future__ import annotations

import math

from ..metrics import complexity
from ..metrics.saliency import reduce_channels
from ..spec.schema import ComplexityCheck
from .base import CheckRequest, Outcome, score_outcome

FUNCTIONS = {"sparseness": complexity.sparseness, "complexity": complexity.complexity}


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, ComplexityCheck) and request.method is not None
    engine = request.engine
    channels = config.channels or engine.spec.saliency.channels
    maps = reduce_channels(engine.attributions(request.method), channels)
    thresholds = config.metrics()
    scores = {name: FUNCTIONS[name](maps) for name in thresholds}
    pixels = maps.shape[1] * maps.shape[2]
    heading = f"maps: {channels} over channels; complexity of a flat map: ln {pixels} = {math.log(pixels):.3f}"
    return score_outcome(request, scores, thresholds, heading)
