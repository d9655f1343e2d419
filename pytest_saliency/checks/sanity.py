"""``sanity`` checks: does the explanation depend on the model at all?

- ``test: cascading`` / ``independent`` (Adebayo et al. 2018): the spec's attribution method is
  run on randomised copies of the model (:func:`~pytest_saliency.metrics.sanity.randomised_models`,
  the ``layers`` top-down by default), with the spec's own attribution config, targets and seed;
  each map is compared with the trained model's by ``similarity``. ``final`` bounds the mean
  similarity after the last step, ``every_step`` after each, ``per_layer`` after the named ones.
  Lower is better: a method that passes loses similarity as the model loses its training.
- ``test: random_logit`` (Sixt et al. 2020): the mean similarity between the map for the target
  and the map for a uniformly drawn other class (seeded per sample), bounded by ``final``.
- ``test: efficient`` (eMPRT, Hedström et al. 2023): the mean of ``(H(ê) − H(e)) / H(e)``
  between the trained and the fully (cascading) randomised model, bounded by ``score``; higher is
  better.

Maps are the attributions after the check's ``channels`` reduction (default
``saliency.channels``). The model under test is never modified: the copies are deep copies.
Undefined samples (a constant map has no ranks) are left out of the means and counted.

Per shard, :func:`statistics` gives each sample's similarity at every step (or its entropies);
the randomised layers' weights are drawn once per worker and kept, with one working copy of the
model that each shard steps through (:func:`~pytest_saliency.metrics.sanity.randomised_steps`).
:func:`decide` reads the merged per-sample values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..errors import Location, SpecRuntimeError, did_you_mean
from ..loaders.models import ModelUnderTest
from ..metrics.fidelity import auc_interval
from ..metrics.saliency import reduce_channels
from ..metrics.sanity import (
    SSIM_WINDOW,
    Order,
    computation_order,
    efficient_mprt_score,
    histogram_entropy,
    other_classes,
    parameterised_layers,
    randomised_state,
    randomised_steps,
    self_similarity,
    similarity,
    similarity_to,
)
from ..report.results import OutcomeExtra
from ..spec.schema import SanityCheck
from ..streaming import Shard
from .aggregation import aggregate
from .kind import CheckKind
from .outcome import Measurement, Outcome
from .request import CheckRequest, config_location
from .samples import Cell, json_floats, sample_table

NETWORK = "network"
"""Layer names in a spec are relative to the user's network inside :class:`ModelUnderTest`."""


def _path(layer: str) -> str:
    """Where ``layer`` (a name in the network; ``""`` the network itself) is in the model."""
    return f"{NETWORK}.{layer}" if layer else NETWORK


def _shown(layer: str) -> str:
    return layer or "<network>"


def statistics(shard: Shard, config: SanityCheck, method: str | None) -> dict[str, Tensor]:
    """Per sample: ``cascading`` / ``independent``: ``similarity`` ``(B, 1 + steps)``, the trained
    map's with itself, then with each step's; ``random_logit``: ``similarity`` and ``other_class``
    ``(B,)``; ``efficient``: ``score``, ``entropy_trained``, ``entropy_randomised`` ``(B,)``."""
    assert method is not None, "a kind with attributions has a method"
    location = config_location(shard, config)
    channels = config.channels or shard.spec.saliency.channels
    trained = reduce_channels(shard.attributions(method), channels)
    if config.similarity_name == "ssim" and min(trained.shape[1:]) < SSIM_WINDOW:
        raise SpecRuntimeError(
            location + ("similarity",),
            f"ssim needs maps of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, the {channels} maps are "
            f"{trained.shape[1]}x{trained.shape[2]} (use similarity: spearman or spearman_abs)",
        )
    if config.test == "random_logit" and shard.target is not None:
        raise SpecRuntimeError(
            location + ("test",),
            f"random_logit compares a classifier's classes; task: {shard.spec.task} takes test: cascading, "
            "independent or efficient",
        )
    if config.test == "random_logit":
        classes = int(shard.logits.shape[1])
        try:
            others = other_classes(shard.targets, classes, shard.spec.seed, shard.indices.tolist())
        except ValueError as error:
            raise SpecRuntimeError(location + ("test",), str(error)) from None
        maps = reduce_channels(shard.attributions_of(shard.model, method, others), channels)
        return {"similarity": similarity(config.similarity_name, trained, maps).float(), "other_class": others}
    layers, left_out = _plan(shard, config, location)
    order: Order = "independent" if config.test == "independent" else "cascading"
    steps = _randomised(shard, config, layers, order, location)
    plan = _plan_columns(shard.model.network, config, layers, left_out, len(shard))
    if config.test == "efficient":
        *_, (_, model) = steps  # every layer re-initialised; only the last step is explained
        assert isinstance(model, ModelUnderTest)
        randomised = reduce_channels(shard.attributions_of(model, method), channels)
        return {
            "score": efficient_mprt_score(trained, randomised, config.bins).float(),
            "entropy_trained": histogram_entropy(trained, config.bins).float(),
            "entropy_randomised": histogram_entropy(randomised, config.bins).float(),
            **plan,
        }
    compare = similarity_to(config.similarity_name, trained)
    curve = [self_similarity(trained)]
    for _, model in steps:
        assert isinstance(model, ModelUnderTest)
        curve.append(compare(reduce_channels(shard.attributions_of(model, method), channels)))
    return {"similarity": torch.stack(curve, dim=1).float(), **plan}


def _plan(shard: Shard, config: SanityCheck, location: Location) -> tuple[list[str], list[str]]:
    """``(layers, left_out)``: the layers to randomise, in the order of the steps, and those left
    out. Listed in ``layers``: as listed, none left out. Else (once per worker, on its first
    batch): every parameterised layer in the order of the computation from the logits down
    (:func:`~pytest_saliency.metrics.sanity.computation_order`), less those whose output never
    reaches the logits and whose randomisation alone leaves the first batch's logits unchanged
    (unused heads): randomising them could not change a map."""
    if config.layers is not None:
        return _listed_layers(shard.model.network, config, location), []
    model, seed = shard.model, shard.spec.seed

    def build() -> tuple[list[str], list[str]]:
        if not parameterised_layers(model.network):
            raise SpecRuntimeError(location + ("test",), "the model has no parameterised layer to randomise")
        images = shard.images[: shard.worker.batch_size]
        scores = model if shard.target is None else shard.scored(model)  # detection, segmentation: target scores
        order, detached = computation_order(scores, model.network, images)
        working = shard.worker.cached(("sanity: working copy",), lambda: copy.deepcopy(model))
        working_scores = working if shard.target is None else shard.scored(working)
        left_out = []
        with torch.inference_mode():
            logits = scores(images)
            for layer in detached:
                module = working.get_submodule(_path(layer))
                try:
                    module.load_state_dict(randomised_state(model, _path(layer), seed))
                except TypeError:  # no reset_parameters: it cannot be randomised, and need not be
                    left_out.append(layer)
                    continue
                if torch.equal(working_scores(images), logits):
                    left_out.append(layer)
                module.load_state_dict(model.get_submodule(_path(layer)).state_dict())
        return [layer for layer in order if layer not in left_out], left_out

    layers, left_out = shard.worker.cached(("sanity: plan", seed), build)
    _check_per_layer(config, layers, location)
    return layers, left_out


def _plan_columns(
    network: nn.Module, config: SanityCheck, layers: list[str], left_out: list[str], count: int
) -> dict[str, Tensor]:
    """The plan of :func:`_plan` as per-sample columns, for :func:`decide` on the driver (which
    does not run the model): ``layer_steps (B, S)`` and ``left_out (B, K)``, indices into the
    network's :func:`parameterised_layers`. None when the spec lists the layers."""
    if config.layers is not None:
        return {}
    known = parameterised_layers(network)
    steps = torch.tensor([known.index(layer) for layer in layers], dtype=torch.long)
    out = torch.tensor([known.index(layer) for layer in left_out], dtype=torch.long)
    return {"layer_steps": steps.expand(count, -1), "left_out": out.expand(count, -1)}


def _decided_layers(request: CheckRequest[SanityCheck], config: SanityCheck) -> tuple[list[str], list[str]]:
    """``(layers, left_out)`` as the shards planned them (:func:`_plan_columns`)."""
    network = request.engine.model.network
    if config.layers is not None:
        return _listed_layers(network, config, request.location), []
    known = parameterised_layers(network)
    statistics = request.statistics
    layers = [known[int(index)] for index in statistics["layer_steps"][0]]
    left_out = [known[int(index)] for index in statistics["left_out"][0]]
    _check_per_layer(config, layers, request.location)
    return layers, left_out


def _listed_layers(network: nn.Module, config: SanityCheck, location: Location) -> list[str]:
    """The layers the spec lists, checked against the network (positioned errors)."""
    assert config.layers is not None
    known = parameterised_layers(network)
    names = [name for name, _ in network.named_modules() if name]
    for position, layer in enumerate(config.layers):
        if layer not in names:
            raise SpecRuntimeError(
                location + ("layers", position),
                f"the model has no layer {layer!r}{did_you_mean(layer, known or names)}",
            )
        if next(network.get_submodule(layer).parameters(), None) is None:
            raise SpecRuntimeError(location + ("layers", position), f"layer {layer!r} has no parameters to randomise")
    layers = list(config.layers)
    _check_per_layer(config, layers, location)
    return layers


def _check_per_layer(config: SanityCheck, layers: list[str], location: Location) -> None:
    for name in config.per_layer or {}:
        if name not in layers:
            raise SpecRuntimeError(
                location + ("per_layer", name),
                f"per_layer names {name!r}, which is not randomised{did_you_mean(name, layers)}",
            )


def _randomised(
    shard: Shard, config: SanityCheck, layers: list[str], order: Order, location: Location
) -> Iterator[tuple[str, nn.Module]]:
    """The randomised copies of the shard's model, one step at a time (a lazy iterator over one
    working copy). Once per worker: each layer's re-initialised weights (drawn with the spec's
    seed, the same in either order) and the working copy."""
    model, seed = shard.model, shard.spec.seed
    paths = [_path(layer) for layer in layers]

    def draw() -> list[dict[str, Tensor]]:
        states = []
        for position, (layer, path) in enumerate(zip(layers, paths, strict=True)):
            try:
                states.append(randomised_state(model, path, seed))
            except TypeError as error:  # a parameterised module without reset_parameters
                where = location + ("layers", position) if config.layers is not None else location
                raise SpecRuntimeError(
                    where, f"cannot re-initialise layer {_shown(layer)!r}: {error}; list the other layers in layers"
                ) from None
        return states

    states = shard.worker.cached(("sanity: randomised layers", tuple(paths), seed), draw)
    working = shard.worker.cached(("sanity: working copy",), lambda: copy.deepcopy(model))
    return randomised_steps(model, working, paths, states, order)


def decide(request: CheckRequest[SanityCheck]) -> Outcome:
    config = request.config
    assert request.method is not None, "a kind with attributions has a method"
    chosen = {name: values[request.selection] for name, values in request.statistics.items()}
    if config.test == "random_logit":
        return _random_logit(request, config, chosen)
    layers, left_out = _decided_layers(request, config)
    if config.test == "efficient":
        outcome = _efficient(request, config, chosen, layers)
    else:
        outcome = _randomisation(request, config, chosen["similarity"].T, layers)
    note = [
        f"left out: {', '.join(left_out)} (their output never reaches the logits and randomising them leaves "
        "the first batch's logits unchanged: an unused head)"
    ]
    return outcome.extended(note if left_out else [], {"sanity": {**outcome.extra["sanity"], "left_out": left_out}})


def _channels(request: CheckRequest[SanityCheck], config: SanityCheck) -> str:
    return config.channels or request.engine.spec.saliency.channels


def _randomisation(
    request: CheckRequest[SanityCheck], config: SanityCheck, values: Tensor, layers: list[str]
) -> Outcome:
    """The outcome from the ``(1 + steps, N)`` similarities of the samples at each step."""
    engine = request.engine
    name = config.similarity_name
    channels = _channels(request, config)
    network = engine.model.network
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
    order = "as listed" if config.layers is not None else "in the order of the computation, from the logits down"
    cumulative = f"cumulatively, {order}" if config.test == "cascading" else "one at a time, the others trained"
    details = [
        (
            f"{config.test} randomisation of {len(layers)} layers ({cumulative}; seed {engine.spec.seed}): "
            f"{name} of the {channels} maps with the trained model's, mean over {values.shape[1]} samples"
        )
    ]
    rows: list[dict[str, Cell]] = [
        {"step": 0, "randomised": "none (trained)", "type": "", name: means[0], "± 95%": intervals[0]}
    ]
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
    extra: OutcomeExtra = {
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


def _random_logit(request: CheckRequest[SanityCheck], config: SanityCheck, chosen: dict[str, Tensor]) -> Outcome:
    engine = request.engine
    assert config.final is not None
    name = config.similarity_name
    channels = _channels(request, config)
    values = chosen["similarity"]
    mean, interval = aggregate(values, "mean"), auc_interval(values)
    measurements = [Measurement.compare(f"{name} to another class's map", mean, config.final, interval)]
    details = [
        (
            f"random logit: {name} between the {channels} map of the {engine.spec.target} class and of a uniformly "
            f"drawn other class (seeded per sample, seed {engine.spec.seed}, {request.result.classes} classes), "
            f"mean over {values.numel()} samples: {mean:.4f} ± {interval:.4f}"
        ),
        "a map that explains the class differs between classes; a high similarity means it does not depend on the class",
    ]
    extra: OutcomeExtra = {
        "sanity": {
            "test": "random_logit",
            "similarity": name,
            "channels": channels,
            "seed": engine.spec.seed,
            "other_class": chosen["other_class"].tolist(),
            "per_sample": json_floats(values),
        }
    }
    return Outcome(
        measurements, samples=values.numel(), undefined=int(values.isnan().sum()), details=details, extra=extra
    )


def _efficient(
    request: CheckRequest[SanityCheck], config: SanityCheck, chosen: dict[str, Tensor], layers: list[str]
) -> Outcome:
    engine = request.engine
    assert config.score is not None
    scores, before, after = chosen["score"], chosen["entropy_trained"], chosen["entropy_randomised"]
    mean, interval = aggregate(scores, "mean"), auc_interval(scores)
    measurements = [Measurement.compare("eMPRT score (H(ê) − H(e)) / H(e)", mean, config.score, interval)]
    details = [
        (
            f"efficient MPRT: entropy of a {config.bins}-bin histogram of the {_channels(request, config)} map, "
            f"trained model {aggregate(before, 'mean'):.4f} nats -> all {len(layers)} layers randomised "
            f"{aggregate(after, 'mean'):.4f} nats (seed {engine.spec.seed}); "
            f"mean relative rise {mean:.4f} ± {interval:.4f}"
        ),
        "a method that explains the model gives a more disordered map for a random model (a positive score)",
    ]
    extra: OutcomeExtra = {
        "sanity": {
            "test": "efficient",
            "channels": _channels(request, config),
            "seed": engine.spec.seed,
            "bins": config.bins,
            "layers": layers,
            "entropy_trained": json_floats(before),
            "entropy_randomised": json_floats(after),
            "per_sample": json_floats(scores),
        }
    }
    return Outcome(
        measurements, samples=scores.numel(), undefined=int(scores.isnan().sum()), details=details, extra=extra
    )


KIND = CheckKind("sanity", SanityCheck, statistics, decide)
