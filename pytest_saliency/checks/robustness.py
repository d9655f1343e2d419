"""``robustness`` checks: thresholds on aggregates of max / average sensitivity and infidelity
(Yeh et al. 2019), computed by captum.metrics (docs/methods.md, "Robustness")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..attribution import Attributor
from ..metrics import robustness
from ..report.results import OutcomeExtra
from ..spec.schema import RobustnessCheck
from ..streaming import Shard
from .kind import CheckKind
from .outcome import Outcome
from .request import CheckRequest, run_in_batches
from .scores import score_outcome


def statistics(shard: Shard, config: RobustnessCheck, method: str | None) -> dict[str, Tensor]:
    """Each thresholded score (``max_sensitivity``, ``avg_sensitivity``, ``infidelity``), ``(B,)``
    float64; the perturbations are seeded by the samples' indices in the data set."""
    assert method is not None, "a kind with attributions has a method"
    thresholds = config.metrics()
    images, targets, clean = shard.images, shard.targets, shard.attributions(method)
    model = shard.model if shard.target is None else shard.scored(shard.model)
    indices = shard.indices.tolist()
    seed = shard.spec.seed
    scores: dict[str, Tensor] = {}
    if "max_sensitivity" in thresholds or "avg_sensitivity" in thresholds:

        def sensitivity(batch_size: int) -> tuple[Tensor, Tensor]:
            location = ("attributions", method)
            attributor = Attributor(shard.spec.attributions[method], model, batch_size, location)

            def explain(inputs: Tensor, target: Tensor, samples: Sequence[int]) -> Tensor:
                return attributor(inputs, target, samples, seed)

            return robustness.sensitivity(
                explain,
                images,
                targets,
                clean,
                perturb_radius=config.perturb_radius,
                n_perturb_samples=config.n_perturb_samples,
                norm_ord=config.norm_ord,
                batch_size=batch_size,
                seed=seed,
                indices=indices,
            )

        highest, mean = run_in_batches(shard, config, config.batch_size, sensitivity)
        scores.update({"max_sensitivity": highest, "avg_sensitivity": mean})
    if "infidelity" in thresholds:

        def infidelity(batch_size: int) -> Tensor:
            return robustness.infidelity(
                model,
                images,
                clean,
                targets,
                noise_std=config.noise_std,
                n_perturb_samples=config.n_perturb_samples,
                normalize=config.normalize,
                batch_size=batch_size,
                seed=seed,
                indices=indices,
            )

        scores["infidelity"] = run_in_batches(shard, config, config.batch_size, infidelity)
    return {name: scores[name] for name in thresholds}


def decide(request: CheckRequest[RobustnessCheck]) -> Outcome:
    config = request.config
    thresholds = config.metrics()
    settings = []
    if "max_sensitivity" in thresholds or "avg_sensitivity" in thresholds:
        settings.append(
            f"sensitivity: uniform noise in ±{config.perturb_radius:g}, {config.norm_ord} norm, "
            "relative to the clean attribution"
        )
    if "infidelity" in thresholds:
        normalized = ", normalized" if config.normalize else ""
        settings.append(f"infidelity: Gaussian noise σ {config.noise_std:g} on the target's logit{normalized}")
    heading = f"{config.n_perturb_samples} perturbations per image; " + "; ".join(settings)
    extra: OutcomeExtra = {
        "robustness": {
            "perturb_radius": config.perturb_radius,
            "n_perturb_samples": config.n_perturb_samples,
            "norm_ord": config.norm_ord,
            "noise_std": config.noise_std,
            "normalize": config.normalize,
        }
    }
    return score_outcome(request, request.statistics, thresholds, heading, extra)


KIND = CheckKind("robustness", RobustnessCheck, statistics, decide)
