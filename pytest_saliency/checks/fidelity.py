"""``fidelity`` checks: thresholds on MIF/LIF curve AUCs and their gap (Brocki & Chung 2022), and
on RISE's insertion AUC (Petsiuk et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import SpecRuntimeError
from ..metrics.fidelity import FidelityResult, SampleScores, default_fractions, removal_counts, sample_scores
from ..report.results import OutcomeExtra
from ..spec.schema import FidelityCheck
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Measurement, Outcome
from .request import CheckRequest, config_location, run_in_batches

ORDER_NAMES = {
    "mif": "most important first",
    "lif": "least important first",
    "random": "random order",
    "insertion": "most important put back first into the blurred image; raw score",
}


def statistics(shard: Shard, config: FidelityCheck, method: str | None) -> dict[str, Tensor]:
    """Each order's raw scores ``(B, S)`` (under the order's name), the clean score ``clean``
    ``(B,)`` and the units per image ``units`` ``(B,)``; every draw is seeded per sample."""
    assert method is not None, "a kind with attributions has a method"
    _check_units(shard, config)
    target = shard.predictions if config.score_of == "predicted" else shard.batch.labels
    model: Callable[[Tensor], Tensor] = shard.model
    score = config.score
    if shard.target is not None:  # detection, segmentation: the bounded score of each sample's own column
        if score == "accuracy":
            where = (*config_location(shard, config), "score")
            raise SpecRuntimeError(where, f"task: {shard.spec.task} has no accuracy score: use score: probability")
        model, target, score = shard.scored(shard.model, bounded=True), shard.targets, "logit"
    attributions = shard.attributions(method)
    indices = shard.indices.tolist()

    def scores(batch_size: int) -> SampleScores:
        return sample_scores(
            model,
            shard.images,
            attributions,
            target=target,
            indices=indices,
            fractions=config.fractions,
            steps=config.steps,
            orders=config.orders,
            fill=config.fill,
            unit=config.patch,
            score=score,
            batch_size=batch_size,
            seed=shard.spec.seed,
            noise_std=config.noise_std,
            channels=config.channels or shard.spec.saliency.channels,
        )

    samples = run_in_batches(shard, config, config.batch_size, scores)
    units = torch.full((len(indices),), samples.n_units, dtype=torch.long)
    return {**samples.scores, "clean": samples.clean, "units": units}


def _check_units(shard: Shard, config: FidelityCheck) -> None:
    """Refuse images cut into fewer units than the curve has points: steps that remove the same
    units repeat a point, and the curves come out flat (a gap of 0 that passes)."""
    height, width = shard.images.shape[-2:]
    units = math.ceil(height / config.patch) * math.ceil(width / config.patch)
    fractions = config.fractions if config.fractions is not None else default_fractions(config.steps)
    distinct = int(torch.unique(removal_counts(fractions, units)).numel())
    if distinct < len(fractions):
        points = f"{len(fractions)} fractions" if config.fractions is not None else f"{config.steps} steps"
        key = "fractions" if config.fractions is not None else "steps"
        raise SpecRuntimeError(
            config_location(shard, config) + ("unit",),
            f"unit {config.unit} cuts the {height}x{width} images into {units} units, too few for the {points}: "
            f"{len(fractions) - distinct} of them would remove the same units as another (flat curves); "
            f"use a smaller unit or fewer {key}",
        )


def decide(request: CheckRequest[FidelityCheck]) -> Outcome:
    config = request.config
    assert request.method is not None, "a kind with attributions has a method"
    result = _curves(request, config)
    summary = result.to_dict()
    measurements = []
    if config.gap is not None:
        defined = int(result.defined.sum())
        measurements.append(
            Measurement.compare("gap (AUC LIF - AUC MIF)", result.gap, config.gap, result.gap_interval, samples=defined)
        )
    for order, threshold in (("mif", config.mif_auc), ("lif", config.lif_auc), ("insertion", config.insertion_auc)):
        if threshold is not None:
            measurements.append(
                Measurement.compare(
                    f"{order} AUC",
                    result.mean_auc(order),
                    threshold,
                    result.auc_interval(order),
                    samples=summary["orders"][order]["n"],
                )
            )
    fill = "blur (insertion)" if config.orders == ["insertion"] else config.fill
    details = request.no_samples() + [
        f"{config.score} of the {config.score_of} class, fill {fill}, unit {config.unit}, "
        f"{len(summary['fractions'])} fractions from 0 to {summary['fractions'][-1]:.2f}",
    ]
    for order in result.orders:
        curve = " ".join(f"{value:.2f}" for value in result.mean_curve(order).tolist())
        details.append(
            f"{order.upper():>6} AUC {result.mean_auc(order):.4f} ± {result.auc_interval(order):.4f} "
            f"({ORDER_NAMES[order]}); mean curve: {curve}"
        )
    if "lif" in result.orders:
        details.append(
            "the LIF curve's fall is the perturbation artifact: removing the least important "
            "features should not move the score"
        )
    extra: OutcomeExtra = {
        "fractions": summary["fractions"],
        "curves": {order: summary["orders"][order]["mean_curve"] for order in result.orders},
        "fidelity": summary,
    }
    samples = len(request.indices)
    return Outcome(measurements, samples=samples, undefined=summary["n_undefined"], details=details, extra=extra)


def _curves(request: CheckRequest[FidelityCheck], config: FidelityCheck) -> FidelityResult:
    """The :class:`FidelityResult` of the item's samples from the merged per-sample scores."""
    statistics, selection = request.statistics, request.selection
    units = statistics["units"][selection]
    fractions = config.fractions if config.fractions is not None else default_fractions(config.steps)
    samples = SampleScores(
        fractions=torch.tensor(fractions, dtype=torch.float64),
        scores={order: statistics[order][selection] for order in config.orders},
        clean=statistics["clean"][selection],
        n_units=int(units[0]) if len(units) else 0,
    )
    return FidelityResult.from_scores(samples, score=config.score, fill=config.fill, unit=config.patch)


KIND = CheckKind("fidelity", FidelityCheck, statistics, decide)
