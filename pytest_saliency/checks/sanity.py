"""``sanity`` checks: does the explanation depend on the model at all?

- ``test: cascading`` / ``independent`` (Adebayo et al. 2018): the spec's attribution method is
  run on randomised copies of the model (:func:`~pytest_saliency.metrics.sanity.randomised_models`,
  the ``layers`` top-down by default), with the spec's own attribution config, targets and seed;
  each map is compared with the trained model's by ``similarity``. ``final`` bounds the mean
  similarity after the last step, ``every_step`` after each, ``per_layer`` after the named ones.
  Lower is better: a method that passes loses similarity as the model loses its training.
- ``test: random_logit`` (Sixt et al. 2020): the mean similarity between the map for the target
  and the map for a uniformly drawn other class (seeded), bounded by ``final``.
- ``test: efficient`` (eMPRT, Hedström et al. 2023): the mean of ``(H(ê) − H(e)) / H(e)``
  between the trained and the fully (cascading) randomised model, bounded by ``score``; higher is
  better.

Maps are the attributions after the check's ``channels`` reduction (default
``saliency.channels``). The model under test is never modified: the copies are deep copies.
Undefined samples (a constant map has no ranks) are left out of the means and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import Location, SpecRuntimeError, did_you_mean
from ..loaders.models import ModelUnderTest
from ..metrics.fidelity import auc_interval
from ..metrics.saliency import ChannelReduction, reduce_channels
from ..metrics.sanity import (
    SSIM_WINDOW,
    Order,
    efficient_mprt_score,
    histogram_entropy,
    other_classes,
    parameterised_layers,
    randomised_models,
    self_similarity,
    similarity,
    similarity_to,
)
from ..spec.schema import SanityCheck
from .base import (
    CheckRequest,
    Measurement,
    Outcome,
    aggregate,
    json_floats,
    sample_table,
)

__all__ = ["evaluate"]

NETWORK = "network"
"""Layer names in a spec are relative to the user's network inside :class:`ModelUnderTest`."""


def _path(layer: str) -> str:
    """Where ``layer`` (a name in the network; ``""`` the network itself) is in the model."""
    return f"{NETWORK}.{layer}" if layer else NETWORK


def _shown(layer: str) -> str:
    return layer or "<network>"


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, SanityCheck) and request.method is not None
    engine = request.engine
    location: Location = ("checks", engine.spec.checks.index(request.check), "sanity")
    channels = config.channels or engine.spec.saliency.channels
    trained = reduce_channels(engine.attributions(request.method), channels)
    if config.similarity_name == "ssim" and min(trained.shape[1:]) < SSIM_WINDOW:
        raise SpecRuntimeError(
            location + ("similarity",),
            f"ssim needs maps of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, the {channels} maps are "
            f"{trained.shape[1]}x{trained.shape[2]} (use similarity: spearman or spearman_abs)",
        )
    if config.test == "random_logit":
        return _random_logit(request, config, trained, channels, location)
    layers = _layers(request, config, location)
    if config.test == "efficient":
        return _efficient(request, config, trained, channels, layers)
    return _randomisation(request, config, trained, channels, layers)


def _layers(request: CheckRequest, config: SanityCheck, location: Location) -> list[str]:
    """The layers to randomise, checked against the network (positioned errors)."""
    network = request.engine.model.network
    known = parameterised_layers(network)
    if config.layers is None:
        if not known:
            raise SpecRuntimeError(location + ("test",), "the model has no parameterised layer to randomise")
        layers = known
    else:
        names = [name for name, _ in network.named_modules() if name]
        for position, layer in enumerate(config.layers):
            if layer not in names:
                raise SpecRuntimeError(
                    location + ("layers", position),
                    f"the model has no layer {layer!r}{did_you_mean(layer, known or names)}",
                )
            if next(network.get_submodule(layer).parameters(), None) is None:
                raise SpecRuntimeError(
                    location + ("layers", position), f"layer {layer!r} has no parameters to randomise"
                )
        layers = list(config.layers)
    for name in config.per_layer or {}:
        if name not in layers:
            raise SpecRuntimeError(
                location + ("per_layer", name),
                f"per_layer names {name!r}, which is not randomised{did_you_mean(name, layers)}",
            )
    return layers


def _randomised_maps(
    request: CheckRequest,
    config: SanityCheck,
    channels: ChannelReduction,
    layers: list[str],
    order: Order,
    last_only: bool = False,
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(layer, (N, H, W) maps)`` of the randomised copies, one step at a time (with
    ``last_only``, only the last step's: the layers before it are re-initialised, not explained)."""
    engine = request.engine
    method = request.method
    assert method is not None
    location: Location = ("checks", engine.spec.checks.index(request.check), "sanity")
    steps = randomised_models(engine.model, [_path(layer) for layer in layers], order, engine.spec.seed)
    for step, layer in enumerate(layers, start=1):
        try:
            _, model = next(steps)
        except TypeError as error:  # a parameterised module without reset_parameters
            where = location + ("layers", step - 1) if config.layers is not None else location
            raise SpecRuntimeError(
                where, f"cannot re-initialise layer {_shown(layer)!r}: {error}; list the other layers in layers"
            ) from None
        if last_only and step < len(layers):
            continue
        label = f"{engine.loaded.name}: {method} with {step}/{len(layers)} layers randomised"
        assert isinstance(model, ModelUnderTest)
        yield layer, reduce_channels(engine.attributions_of(model, method, label), channels)


def _randomisation(
    request: CheckRequest, config: SanityCheck, trained: Tensor, channels: ChannelReduction, layers: list[str]
) -> Outcome:
    engine = request.engine
    name = config.similarity_name
    network = engine.model.network
    compare = similarity_to(name, trained)
    curve = [self_similarity(trained)]
    order: Order = "cascading" if config.test == "cascading" else "independent"
    for _, maps in _randomised_maps(request, config, channels, layers, order):
        curve.append(compare(maps))
    values = torch.stack(curve).float()  # (1 + steps, N)
    means = [aggregate(row, "mean") for row in values]
    intervals = [auc_interval(row) for row in values]
    measurements = []
    if config.final is not None:
        what = (
            f"all {len(layers)} layers randomised"
            if config.test == "cascading"
            else f"only {_shown(layers[-1])} randomised"
        )
        measurements.append(Measurement.compare(f"final {name} ({what})", means[-1], config.final, intervals[-1]))
    for step, layer in enumerate(layers, start=1):
        for threshold in (config.every_step, (config.per_layer or {}).get(layer)):
            if threshold is not None:
                step_name = (
                    f"after {_shown(layer)}" if config.test == "cascading" else f"with only {_shown(layer)} randomised"
                )
                measurements.append(Measurement.compare(f"{name} {step_name}", means[step], threshold, intervals[step]))
    cumulative = (
        "cumulatively, top-down as listed" if config.test == "cascading" else "one at a time, the others trained"
    )
    details = [
        (
            f"{config.test} randomisation of {len(layers)} layers ({cumulative}; seed {engine.spec.seed}): "
            f"{name} of the {channels} maps with the trained model's, mean over {values.shape[1]} samples"
        )
    ]
    rows = [{"step": 0, "randomised": "none (trained)", "type": "", name: means[0], "± 95%": intervals[0]}]
    rows += [
        {
            "step": step,
            "randomised": _shown(layer),
            "type": type(network.get_submodule(layer)).__name__,
            name: means[step],
            "± 95%": intervals[step],
        }
        for step, layer in enumerate(layers, start=1)
    ]
    details += sample_table(rows, ["step", "randomised", "type", name, "± 95%"])
    details.append(
        "a method that explains the model loses similarity as layers are randomised; "
        "a similarity that stays high means the map does not depend on what the model learned"
    )
    undefined = int(values[-1].isnan().sum())
    extra: dict[str, Any] = {
        "sanity": {
            "test": config.test,
            "similarity": name,
            "channels": channels,
            "seed": engine.spec.seed,
            "layers": layers,
            "types": [type(network.get_submodule(layer)).__name__ for layer in layers],
            "steps": ["original", *layers],
            "curve": json_floats(torch.tensor(means)),
            "intervals": json_floats(torch.tensor(intervals)),
            "final": str(config.final) if config.final is not None else None,
            "per_sample_final": json_floats(values[-1]),
        }
    }
    return Outcome(measurements, samples=values.shape[1], undefined=undefined, details=details, extra=extra)


def _random_logit(
    request: CheckRequest, config: SanityCheck, trained: Tensor, channels: ChannelReduction, location: Location
) -> Outcome:
    engine = request.engine
    assert request.method is not None and config.final is not None
    name = config.similarity_name
    classes = int(engine.logits.shape[1])
    try:
        others = other_classes(engine.targets, classes, engine.spec.seed)
    except ValueError as error:
        raise SpecRuntimeError(location + ("test",), str(error)) from None
    label = f"{engine.loaded.name}: {request.method} for another class"
    maps = reduce_channels(engine.attributions_of(engine.model, request.method, label, others), channels)
    values = similarity(name, trained, maps).float()
    mean, interval = aggregate(values, "mean"), auc_interval(values)
    measurements = [Measurement.compare(f"{name} to another class's map", mean, config.final, interval)]
    details = [
        (
            f"random logit: {name} between the {channels} map of the {engine.spec.target} class and of a uniformly "
            f"drawn other class (seed {engine.spec.seed}, {classes} classes), mean over {values.numel()} samples: "
            f"{mean:.4f} ± {interval:.4f}"
        ),
        "a map that explains the class differs between classes; a high similarity means it does not depend on the class",
    ]
    extra = {
        "sanity": {
            "test": "random_logit",
            "similarity": name,
            "channels": channels,
            "seed": engine.spec.seed,
            "other_class": others.tolist(),
            "per_sample": json_floats(values),
        }
    }
    return Outcome(
        measurements, samples=values.numel(), undefined=int(values.isnan().sum()), details=details, extra=extra
    )


def _efficient(
    request: CheckRequest, config: SanityCheck, trained: Tensor, channels: ChannelReduction, layers: list[str]
) -> Outcome:
    engine = request.engine
    assert config.score is not None
    ((_, randomised),) = _randomised_maps(request, config, channels, layers, "cascading", last_only=True)
    scores = efficient_mprt_score(trained, randomised, config.bins).float()
    before, after = histogram_entropy(trained, config.bins), histogram_entropy(randomised, config.bins)
    mean, interval = aggregate(scores, "mean"), auc_interval(scores)
    measurements = [Measurement.compare("eMPRT score (H(ê) − H(e)) / H(e)", mean, config.score, interval)]
    details = [
        (
            f"efficient MPRT: entropy of a {config.bins}-bin histogram of the {channels} map, trained model "
            f"{aggregate(before.float(), 'mean'):.4f} nats -> all {len(layers)} layers randomised "
            f"{aggregate(after.float(), 'mean'):.4f} nats (seed {engine.spec.seed}); "
            f"mean relative rise {mean:.4f} ± {interval:.4f}"
        ),
        "a method that explains the model gives a more disordered map for a random model (a positive score)",
    ]
    extra = {
        "sanity": {
            "test": "efficient",
            "channels": channels,
            "seed": engine.spec.seed,
            "bins": config.bins,
            "layers": layers,
            "entropy_trained": json_floats(before.float()),
            "entropy_randomised": json_floats(after.float()),
            "per_sample": json_floats(scores),
        }
    }
    return Outcome(
        measurements, samples=scores.numel(), undefined=int(scores.isnan().sum()), details=details, extra=extra
    )
