"""``robustness`` checks: thresholds on aggregates of max / average sensitivity and infidelity
(Yeh et al. 2019), computed by captum.metrics (docs/methods.md, "Robustness")."""

from __future__ import annotations

import torch
from torch import Tensor

from ..attribution import Attributor
from ..metrics import robustness
from ..metrics.robustness import Progress
from ..spec.schema import RobustnessCheck
from .base import CheckRequest, Outcome, run_in_batches, score_outcome


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, RobustnessCheck) and request.method is not None
    engine = request.engine
    device = engine.device
    thresholds = config.metrics()
    images = engine.data.images.to(device)
    targets = engine.targets.to(device)
    clean = engine.attributions(request.method)
    seed = engine.spec.seed
    scores: dict[str, Tensor] = {}
    settings = []

    def progress(what: str) -> Progress | None:
        report, label = engine.progress, f"{engine.loaded.name}: {request.method} {what}"
        return None if report is None else lambda done, total: report(label, done, total)

    if "max_sensitivity" in thresholds or "avg_sensitivity" in thresholds:
        method = request.method
        location = ("attributions", method)

        def sensitivity(batch_size: int) -> tuple[Tensor, Tensor]:
            attributor = Attributor(engine.spec.attributions[method], engine.model, batch_size, location)
            generator = torch.Generator().manual_seed(seed)
            return robustness.sensitivity(
                lambda inputs, target: attributor(inputs, target, generator),
                images,
                targets,
                clean,
                perturb_radius=config.perturb_radius,
                n_perturb_samples=config.n_perturb_samples,
                norm_ord=config.norm_ord,
                batch_size=batch_size,
                seed=seed,
                progress=progress("sensitivity"),
            )

        highest, mean = run_in_batches(request, config.batch_size, sensitivity)
        scores.update({"max_sensitivity": highest, "avg_sensitivity": mean})
        settings.append(
            f"sensitivity: uniform noise in ±{config.perturb_radius:g}, {config.norm_ord} norm, "
            "relative to the clean attribution"
        )
    if "infidelity" in thresholds:

        def infidelity(batch_size: int) -> Tensor:
            return robustness.infidelity(
                engine.model,
                images,
                clean,
                targets,
                noise_std=config.noise_std,
                n_perturb_samples=config.n_perturb_samples,
                normalize=config.normalize,
                batch_size=batch_size,
                seed=seed,
                progress=progress("infidelity"),
            )

        scores["infidelity"] = run_in_batches(request, config.batch_size, infidelity)
        normalized = ", normalized" if config.normalize else ""
        settings.append(f"infidelity: Gaussian noise σ {config.noise_std:g} on the target's logit{normalized}")
    scores = {name: scores[name] for name in thresholds}
    heading = f"{config.n_perturb_samples} perturbations per image; " + "; ".join(settings)
    extra = {
        "robustness": {
            "perturb_radius": config.perturb_radius,
            "n_perturb_samples": config.n_perturb_samples,
            "norm_ord": config.norm_ord,
            "noise_std": config.noise_std,
            "normalize": config.normalize,
        }
    }
    return score_outcome(request, scores, thresholds, heading, extra)
