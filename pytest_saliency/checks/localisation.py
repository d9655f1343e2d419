"""``localisation`` checks: thresholds on aggregates of the localisation family against the
ground-truth masks (pointing game, attribution localisation, relevance mass and rank accuracy,
top-k intersection, ROC-AUC, energy-based pointing game; docs/methods.md, "Localisation")."""

from __future__ import annotations

from torch import Tensor

from ..errors import SpecRuntimeError
from ..metrics import localisation
from ..metrics.saliency import reduce_channels
from ..spec.schema import LocalisationCheck
from .base import CheckRequest, Outcome, score_outcome


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, LocalisationCheck) and request.method is not None
    engine = request.engine
    channels = config.channels or engine.spec.saliency.channels
    maps = reduce_channels(engine.attributions(request.method), channels)
    masks = engine.data.masks
    functions = {
        "pointing_game": lambda: localisation.pointing_game(maps, masks, config.tolerance),
        "attribution_localisation": lambda: localisation.attribution_localisation(maps, masks),
        "relevance_mass_accuracy": lambda: localisation.relevance_mass_accuracy(maps, masks),
        "relevance_rank_accuracy": lambda: localisation.relevance_rank_accuracy(maps, masks),
        "top_k_intersection": lambda: localisation.top_k_intersection(maps, masks, _k(request, maps)),
        "auc": lambda: localisation.auc(maps, masks),
        "energy_pointing_game": lambda: localisation.energy_pointing_game(maps, masks),
    }
    thresholds = config.metrics()
    scores = {name: functions[name]() for name in thresholds}
    settings = [f"maps: {channels} over channels", "empty masks are undefined"]
    if "pointing_game" in thresholds:
        settings.append(f"pointing game tolerance {config.tolerance} px")
    if "top_k_intersection" in thresholds:
        settings.append(f"k = {config.k}")
    return score_outcome(request, scores, thresholds, ", ".join(settings))


def _k(request: CheckRequest, maps: Tensor) -> int:
    """The spec's ``k``, refused (at its key) when an image has fewer pixels."""
    config = request.check.config
    assert isinstance(config, LocalisationCheck) and config.k is not None
    pixels = maps.shape[1] * maps.shape[2]
    if config.k > pixels:
        location = ("checks", request.engine.spec.checks.index(request.check), "localisation", "k")
        raise SpecRuntimeError(
            location, f"k = {config.k} is more than the {pixels} pixels of an image: give k <= {pixels}"
        )
    return config.k
