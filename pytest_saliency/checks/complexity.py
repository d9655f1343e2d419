"""``complexity`` checks: thresholds on aggregates of each map's sparseness (Gini index) and
complexity (entropy); docs/methods.md, "Complexity"."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..metrics import complexity
from ..metrics.saliency import reduce_channels
from ..spec.schema import ComplexityCheck
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest
from .scores import score_outcome

FUNCTIONS = {"sparseness": complexity.sparseness, "complexity": complexity.complexity}


def statistics(shard: Shard, config: ComplexityCheck, method: str | None) -> dict[str, Tensor]:
    """``sparseness`` and / or ``complexity``, ``(B,)``."""
    assert method is not None, "a kind with attributions has a method"
    maps = reduce_channels(shard.attributions(method), config.channels or shard.spec.saliency.channels)
    pixels = torch.full((maps.shape[0],), maps.shape[1] * maps.shape[2], dtype=torch.long)
    return {"pixels": pixels, **{name: FUNCTIONS[name](maps) for name in config.metrics()}}


def decide(request: CheckRequest[ComplexityCheck]) -> Outcome:
    config = request.config
    channels = config.channels or request.engine.spec.saliency.channels
    statistics = request.statistics
    pixels = int(statistics["pixels"][0]) if len(statistics["pixels"]) else 0
    heading = f"maps: {channels} over channels; complexity of a flat map: ln {pixels} = {math.log(max(pixels, 1)):.3f}"
    scores = {name: statistics[name] for name in config.metrics()}
    return score_outcome(request, scores, config.metrics(), heading)


KIND = CheckKind("complexity", ComplexityCheck, statistics, decide)
