"""Robustness of an attribution: sensitivity and infidelity, computed by ``captum.metrics``.

Yeh, Hsieh, Suggala, Inouye, Ravikumar, "On the (In)fidelity and Sensitivity of Explanations",
NeurIPS 2019 (docs/methods.md, "Robustness"). Nothing is reimplemented: captum's
``sensitivity_max`` and ``infidelity`` do the arithmetic; this module feeds them batches and
seeded perturbations.

- Perturbations are drawn per sample and perturbation, from a generator seeded by the spec's
  seed, the sample's position and the perturbation's number, so for a deterministic method a
  sample's scores do not depend on the batch it is in, nor on the other samples, and only one
  perturbation of a batch is held at a time. A method that draws randomness of its own
  (``noise_tunnel``, a random baseline) draws it in batch order, so its scores vary with the
  batch size.
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
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .seeding import seeded_generator

__all__ = ["infidelity", "sensitivity"]

Explain = Callable[[Tensor, Tensor], Tensor]
"""``(B, C, H, W)`` inputs and ``(B,)`` targets -> ``(B, C', H, W)`` attributions."""
Progress = Callable[[int, int], None]
"""Called after each captum call with ``(images done, images in all)``."""

_SALT_SENSITIVITY, _SALT_INFIDELITY = 0x61, 0x62


def _per_sample_noise(
    positions: range,
    perturbation: int,
    shape: tuple[int, ...],
    seed: int,
    salt: int,
    kind: Literal["uniform", "normal"],
) -> Tensor:
    """``(len(positions), *shape)`` noise of one perturbation: sample ``i``'s drawn from a CPU
    generator seeded by ``(seed, salt, i, perturbation)`` (uniform in ``[-1, 1]`` or standard
    normal), so it is the same whatever batch the sample is in."""
    draws = []
    for position in positions:  # one generator per sample of the batch, for this perturbation
        generator = seeded_generator(seed, salt, position, perturbation)
        if kind == "uniform":
            draws.append(torch.rand(shape, generator=generator) * 2 - 1)
        else:
            draws.append(torch.randn(shape, generator=generator))
    return torch.stack(draws)


def _clean_or_explained(
    explain: Explain, batch: Tensor, batch_clean: Tensor
) -> Callable[[Tensor | tuple[Tensor, ...], Tensor], tuple[Tensor]]:
    """captum's explanation function for one batch: ``batch_clean`` for ``batch`` itself, else ``explain``."""

    def explanation(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
        # a tuple: captum 0.9 iterates over the clean explanation as a tuple of inputs
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (batch_clean if x is batch else explain(x, target),)

    return explanation


def _gaussian_perturbations(positions: range, noise_std: float, seed: int) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """captum's perturbation function for the samples at ``positions``: each call serves the next
    perturbations of each sample, so they do not depend on the batch split."""
    served = 0

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        # captum repeats each sample m times in a row (repeat_interleave): serve the next m
        # of its perturbations in that layout
        nonlocal served
        m = inputs.shape[0] // len(positions)
        shape = tuple(inputs.shape[1:])
        draws = [_per_sample_noise(positions, served + t, shape, seed, _SALT_INFIDELITY, "normal") for t in range(m)]
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
    progress: Progress | None = None,
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

    Returns:
        ``((N,) max, (N,) mean)`` float64 over the perturbations of ``‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖``
        (captum divides by the clean norm, or by 1 when it is 0).
    """
    from captum.metrics import sensitivity_max

    order: float | str = math.inf if norm_ord == "inf" else norm_ord
    per_perturbation = []
    for start in range(0, len(images), batch_size):
        batch, batch_target = images[start : start + batch_size], target[start : start + batch_size]
        batch_clean = clean[start : start + batch_size].to(images.device)
        positions = range(start, start + len(batch))
        explanation = _clean_or_explained(explain, batch, batch_clean)
        values = []
        for j in range(n_perturb_samples):
            noise = _per_sample_noise(positions, j, tuple(batch.shape[1:]), seed, _SALT_SENSITIVITY, "uniform")
            shift = (perturb_radius * noise).to(device=batch.device, dtype=batch.dtype)
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
        if progress is not None:
            progress(start + len(batch), len(images))
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
    progress: Progress | None = None,
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

    Returns:
        ``(N,)`` float64.
    """
    from captum.metrics import infidelity as captum_infidelity

    scores = []
    for start in range(0, len(images), batch_size):
        batch, batch_target = images[start : start + batch_size], target[start : start + batch_size]
        positions = range(start, start + len(batch))
        scores.append(
            captum_infidelity(
                model,
                _gaussian_perturbations(positions, noise_std, seed),
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
        if progress is not None:
            progress(start + len(batch), len(images))
    return torch.cat(scores)
