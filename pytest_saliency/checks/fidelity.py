"""``fidelity`` checks: thresholds on MIF/LIF curve AUCs and their gap (Brocki & Chung 2022), and
on RISE's insertion AUC (Petsiuk et al. 2018)."""

from __future__ import annotations

from ..metrics.fidelity import FidelityResult, fidelity_curves
from ..spec.schema import FidelityCheck
from .base import CheckRequest, Measurement, Outcome, run_in_batches

ORDER_NAMES = {
    "mif": "most important first",
    "lif": "least important first",
    "random": "random order",
    "insertion": "most important put back first into the blurred image; raw score",
}


def evaluate(request: CheckRequest) -> Outcome:
    config = request.check.config
    assert isinstance(config, FidelityCheck) and request.method is not None
    engine = request.engine
    device = engine.device
    target = engine.predictions if config.score_of == "predicted" else engine.data.labels
    attributions = engine.attributions(request.method)
    label, report = f"{engine.loaded.name}: {request.method} curves", engine.progress

    def curves(batch_size: int) -> FidelityResult:
        return fidelity_curves(
            engine.model,
            engine.data.images.to(device),
            attributions.to(device),
            target=target.to(device),
            fractions=config.fractions,
            steps=config.steps,
            orders=config.orders,
            fill=config.fill,
            unit=config.patch,
            score=config.score,
            batch_size=batch_size,
            seed=engine.spec.seed,
            noise_std=config.noise_std,
            channels=config.channels or engine.spec.saliency.channels,
            progress=(lambda done, total: report(label, done, total)) if report else None,
        )

    result = run_in_batches(request, config.batch_size, curves)
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
    details = [
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
    undefined = summary["n_undefined"]
    extra = {
        "fractions": summary["fractions"],
        "curves": {order: summary["orders"][order]["mean_curve"] for order in result.orders},
        "fidelity": summary,
    }
    return Outcome(measurements, samples=len(engine.data), undefined=undefined, details=details, extra=extra)
