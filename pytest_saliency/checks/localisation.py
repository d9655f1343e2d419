"""``localisation`` checks: thresholds on aggregates of the localisation family against the
ground-truth masks (pointing game, attribution localisation, relevance mass and rank accuracy,
top-k intersection, ROC-AUC, energy-based pointing game; docs/methods.md, "Localisation")."""

from __future__ import annotations

from torch import Tensor

from ..errors import SpecRuntimeError
from ..metrics import localisation
from ..metrics.saliency import reduce_channels
from ..spec.schema import LocalisationCheck
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest, config_location
from .scores import score_outcome


def statistics(shard: Shard, config: LocalisationCheck, method: str | None) -> dict[str, Tensor]:
    """Each thresholded metric of the family, ``(B,)``."""
    assert method is not None, "a kind with attributions has a method"
    channels = config.channels or shard.spec.saliency.channels
    maps = reduce_channels(shard.attributions(method), channels)
    masks = shard.masks
    functions = {
        "pointing_game": lambda: localisation.pointing_game(maps, masks, config.tolerance),
        "attribution_localisation": lambda: localisation.attribution_localisation(maps, masks),
        "relevance_mass_accuracy": lambda: localisation.relevance_mass_accuracy(maps, masks),
        "relevance_rank_accuracy": lambda: localisation.relevance_rank_accuracy(maps, masks),
        "top_k_intersection": lambda: localisation.top_k_intersection(maps, masks, _k(shard, config, maps)),
        "auc": lambda: localisation.auc(maps, masks),
        "energy_pointing_game": lambda: localisation.energy_pointing_game(maps, masks),
    }
    return {name: functions[name]() for name in config.metrics()}


def decide(request: CheckRequest[LocalisationCheck]) -> Outcome:
    config = request.config
    channels = config.channels or request.engine.spec.saliency.channels
    thresholds = config.metrics()
    settings = [f"maps: {channels} over channels", "empty masks are undefined"]
    if "pointing_game" in thresholds:
        settings.append(f"pointing game tolerance {config.tolerance} px")
    if "top_k_intersection" in thresholds:
        settings.append(f"k = {config.k}")
    return score_outcome(request, request.statistics, thresholds, ", ".join(settings))


def _k(shard: Shard, config: LocalisationCheck, maps: Tensor) -> int:
    """The spec's ``k``, refused (at its key) when an image has fewer pixels."""
    assert config.k is not None, "the schema requires k with top_k_intersection"
    pixels = maps.shape[1] * maps.shape[2]
    if config.k > pixels:
        location = (*config_location(shard, config), "k")
        raise SpecRuntimeError(
            location, f"k = {config.k} is more than the {pixels} pixels of an image: give k <= {pixels}"
        )
    return config.k


KIND = CheckKind("localisation", LocalisationCheck, statistics, decide)
