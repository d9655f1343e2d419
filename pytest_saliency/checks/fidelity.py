"""``fidelity`` checks: thresholds on MIF/LIF curve AUCs and their gap (Brocki & Chung 2022), and
on RISE's insertion AUC (Petsiuk et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import SpecRuntimeError
from ..metrics.fidelity import FidelityResult, SampleScores, default_fractions, sample_scores
from ..report.results import OutcomeExtra
from ..spec.schema import CheckSpec, FidelityCheck
from ..streaming import Shard
from .base import CheckRequest, Measurement, Outcome, check_location, run_in_batches

ORDER_NAMES = {
    "mif": "most important first",
    "lif": "least important first",
    "random": "random order",
    "insertion": "most important put back first into the blurred image; raw score",
}


def statistics(shard: Shard, check: CheckSpec, method: str | None) -> dict[str, Tensor]:
    """Each order's raw scores ``(B, S)`` (under the order's name), the clean score ``clean``
    ``(B,)`` and the units per image ``units`` ``(B,)``; every draw is seeded per sample."""
    config = check.config
    assert isinstance(config, FidelityCheck) and method is not None
    target = shard.predictions if config.score_of == "predicted" else shard.batch.labels
    model: Callable[[Tensor], Tensor] = shard.model
    score = config.score
    if shard.target is not None:  # detection, segmentation: the bounded score of each sample's own column
        if score == "accuracy":
            where = (*check_location(shard, check), "score")
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

    samples = run_in_batches(shard, check, config.batch_size, scores)
    units = torch.full((len(indices),), samples.n_units, dtype=torch.long)
    return {**samples.scores, "clean": samples.clean, "units": units}


def decide(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, FidelityCheck) and request.method is not None
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


def _curves(request: CheckRequest, config: FidelityCheck) -> FidelityResult:
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
