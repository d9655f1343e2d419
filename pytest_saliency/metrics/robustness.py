"""Robustness of an attribution: sensitivity and infidelity, computed by ``captum.metrics``.

Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of Explanations",
NeurIPS 2019 (docs/methods.md, "Robustness"). Nothing is reimplemented: captum's
``sensitivity_max`` and ``infidelity`` do the arithmetic; this module feeds them batches and
seeded perturbations.

- Perturbations are drawn per sample and perturbation, from a generator seeded by the spec's
  seed, the sample's index in the data set (``indices``) and the perturbation's number
  (:func:`~pytest_saliency.metrics.seeding.per_sample_draws`), so a sample's scores depend
  neither on the batch nor on the shard it is in, nor on the other samples, and only one
  perturbation of a batch is held at a time. ``explain`` gets the samples' indices as well, so a
  method that draws randomness of its own (``noise_tunnel``, a random baseline) seeds it per
  sample too (:class:`~pytest_saliency.attribution.Attributor`).
- Max and average sensitivity come from the same perturbations: captum's ``sensitivity_max`` is
  called once per perturbation (``n_perturb_samples=1``, whose "max" is that perturbation's
  relative change ``‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖``), and the max and the mean are taken over those
  calls. The clean explanation ``Φ(x)`` is the one already computed (``clean``), so the cost is
  one explanation per image and perturbation, as for a single ``sensitivity_max`` call.
- Infidelity is one captum ``infidelity`` call per batch with every perturbation (its
  ``normalize`` needs them all at once), one perturbation per forward pass
  (``max_examples_per_batch`` = the batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from .seeding import per_sample_draws, sample_indices

__all__ = ["infidelity", "sensitivity"]

Explain = Callable[[Tensor, Tensor, Sequence[int]], Tensor]
"""``(B, C, H, W)`` inputs, ``(B,)`` targets and the samples' indices -> ``(B, C', H, W)`` attributions."""

_SALT_SENSITIVITY, _SALT_INFIDELITY = 0x61, 0x62


def _clean_or_explained(
    explain: Explain, batch: Tensor, batch_clean: Tensor, indices: Sequence[int]
) -> Callable[[Tensor | tuple[Tensor, ...], Tensor], tuple[Tensor]]:
    """captum's explanation function for one batch (the samples ``indices``): ``batch_clean``
    for ``batch`` itself, else ``explain``."""

    def explanation(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
        # a tuple: captum 0.9 iterates over the clean explanation as a tuple of inputs
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (batch_clean if x is batch else explain(x, target, indices),)

    return explanation


def _gaussian_perturbations(
    indices: Sequence[int], noise_std: float, seed: int
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """captum's perturbation function for the samples ``indices``: each call serves the next
    perturbations of each sample, so they do not depend on the batch split."""
    served = 0

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        # captum repeats each sample m times in a row (repeat_interleave): serve the next m
        # of its perturbations in that layout
        nonlocal served
        m = inputs.shape[0] // len(indices)
        shape = tuple(inputs.shape[1:])
        draws = [per_sample_draws(indices, shape, seed, _SALT_INFIDELITY, "normal", served + t) for t in range(m)]
        perturbation = (noise_std * torch.stack(draws, dim=1)).reshape(inputs.shape).to(inputs.device, inputs.dtype)
        served += m
        return perturbation, inputs - perturbation

    return perturb


def sensitivity(
    explain: Explain,
    images: Tensor,
    target: Tensor,
    clean: Tensor,
    *,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: Literal["fro", "inf"] = "fro",
    batch_size: int = 64,
    seed: int = 0,
    indices: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Max- and average sensitivity (Yeh et al. 2019) through ``captum.metrics.sensitivity_max``.

    Args:
        explain: the attribution method.
        images: ``(N, C, H, W)`` inputs on the model's device; ``target``: ``(N,)`` classes.
        clean: ``(N, C', H, W)`` the attributions of ``images`` (``explain(images, target)``).
        perturb_radius: each input value moves by uniform noise in ``[-r, r]`` (captum's default
            perturbation, an L∞ ball).
        n_perturb_samples: perturbations per image.
        batch_size: images per captum call; ``seed``: seeds the perturbations.
        norm_ord: ``"fro"`` (captum's default) or ``"inf"`` for the norm of the change.
        indices: the ``N`` samples' indices in the data set (default ``0 .. N-1``), which seed
            each sample's perturbations and are passed on to ``explain``.

    Returns:
        ``((N,) max, (N,) mean)`` float64 over the perturbations of ``‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖``
        (captum divides by the clean norm, or by 1 when it is 0).
    """
    from captum.metrics import sensitivity_max

    order: float | str = math.inf if norm_ord == "inf" else norm_ord
    samples = sample_indices(indices, len(images))
    per_perturbation = []
    for start in range(0, len(images), batch_size):
        batch, batch_target = images[start : start + batch_size], target[start : start + batch_size]
        batch_clean = clean[start : start + batch_size].to(images.device)
        batch_indices = samples[start : start + len(batch)]
        explanation = _clean_or_explained(explain, batch, batch_clean, batch_indices)
        values = []
        for j in range(n_perturb_samples):
            noise = per_sample_draws(batch_indices, tuple(batch.shape[1:]), seed, _SALT_SENSITIVITY, "uniform", j)
            shift = (perturb_radius * (noise * 2 - 1)).to(device=batch.device, dtype=batch.dtype)
            values.append(
                sensitivity_max(
                    explanation,
                    batch,
                    perturb_func=lambda x, _radius, shift=shift: x + shift,
                    perturb_radius=perturb_radius,
                    n_perturb_samples=1,
                    norm_ord=order,
                    target=batch_target,
                )
            )
        per_perturbation.append(torch.stack(values, dim=1).double().cpu())
    relative_changes = torch.cat(per_perturbation)  # (N, n_perturb_samples)
    return relative_changes.amax(dim=1), relative_changes.mean(dim=1)


def infidelity(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    attributions: Tensor,
    target: Tensor,
    *,
    noise_std: float = 0.003,
    n_perturb_samples: int = 10,
    normalize: bool = True,
    batch_size: int = 64,
    seed: int = 0,
    indices: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Infidelity (Yeh et al. 2019) through ``captum.metrics.infidelity``:
    ``E_I[(Iᵀ Φ(x) − (f(x) − f(x − I)))²]`` with ``I ~ N(0, noise_std²)`` on every input value and
    ``f`` the model's output for the target (its logit).

    Args:
        model: ``(B, C, H, W)`` -> ``(B, K)``.
        images: ``(N, C, H, W)`` on the model's device; ``attributions``: ``(N, C, H, W)``;
            ``target``: ``(N,)``.
        normalize: rescale ``Φ`` by the scalar that minimises the error first (captum's
            ``normalize``), which makes the score independent of the attribution's scale.
        indices: the ``N`` samples' indices in the data set (default ``0 .. N-1``), which seed
            each sample's perturbations.

    Returns:
        ``(N,)`` float64.
    """
    from captum.metrics import infidelity as captum_infidelity

    samples = sample_indices(indices, len(images))
    scores = []
    for start in range(0, len(images), batch_size):
        batch, batch_target = images[start : start + batch_size], target[start : start + batch_size]
        scores.append(
            captum_infidelity(
                model,
                _gaussian_perturbations(samples[start : start + len(batch)], noise_std, seed),
                batch,
                attributions[start : start + batch_size].to(batch.device),
                target=batch_target,
                n_perturb_samples=n_perturb_samples,
                max_examples_per_batch=len(batch),
                normalize=normalize,
            )
            .double()
            .cpu()
        )
    return torch.cat(scores)
