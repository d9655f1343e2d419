"""``localisation`` checks: thresholds on aggregates of the localisation family against the
ground-truth masks (pointing game, attribution localisation, relevance mass and rank accuracy,
top-k intersection, ROC-AUC, energy-based pointing game; docs/methods.md, "Localisation")."""

from __future__ import annotations

from torch import Tensor

from ..errors import SpecRuntimeError
from ..metrics import localisation
from ..metrics.saliency import reduce_channels
from ..spec.schema import CheckSpec, LocalisationCheck
from ..streaming import Shard
from .base import CheckRequest, Outcome, check_location, score_outcome


def statistics(shard: Shard, check: CheckSpec, method: str | None) -> dict[str, Tensor]:
    """Each thresholded metric of the family, ``(B,)``."""
    config = check.config
    assert isinstance(config, LocalisationCheck) and method is not None
    channels = config.channels or shard.spec.saliency.channels
    maps = reduce_channels(shard.attributions(method), channels)
    masks = shard.masks
    functions = {
        "pointing_game": lambda: localisation.pointing_game(maps, masks, config.tolerance),
        "attribution_localisation": lambda: localisation.attribution_localisation(maps, masks),
        "relevance_mass_accuracy": lambda: localisation.relevance_mass_accuracy(maps, masks),
        "relevance_rank_accuracy": lambda: localisation.relevance_rank_accuracy(maps, masks),
        "top_k_intersection": lambda: localisation.top_k_intersection(maps, masks, _k(shard, check, maps)),
        "auc": lambda: localisation.auc(maps, masks),
        "energy_pointing_game": lambda: localisation.energy_pointing_game(maps, masks),
    }
    return {name: functions[name]() for name in config.metrics()}


def decide(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, LocalisationCheck)
    channels = config.channels or request.engine.spec.saliency.channels
    thresholds = config.metrics()
    settings = [f"maps: {channels} over channels", "empty masks are undefined"]
    if "pointing_game" in thresholds:
        settings.append(f"pointing game tolerance {config.tolerance} px")
    if "top_k_intersection" in thresholds:
        settings.append(f"k = {config.k}")
    return score_outcome(request, request.statistics, thresholds, ", ".join(settings))


def _k(shard: Shard, check: CheckSpec, maps: Tensor) -> int:
    """The spec's ``k``, refused (at its key) when an image has fewer pixels."""
    config = check.config
    assert isinstance(config, LocalisationCheck) and config.k is not None
    pixels = maps.shape[1] * maps.shape[2]
    if config.k > pixels:
        location = (*check_location(shard, check), "k")
        raise SpecRuntimeError(
            location, f"k = {config.k} is more than the {pixels} pixels of an image: give k <= {pixels}"
        )
    return config.k
