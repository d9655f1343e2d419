"""Sensitivity and infidelity (docs/methods.md, "Robustness") against captum.metrics called
directly on the whole batch with the same perturbations, and their invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, Saliency
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max
from test_fidelity import small_cnn

from pytest_saliency.metrics import robustness
from pytest_saliency.metrics.robustness import _SALT_INFIDELITY, _SALT_SENSITIVITY
from pytest_saliency.metrics.seeding import per_sample_draws

N, N_PERTURB, SEED = 5, 4, 3


def workload():
    model = small_cnn(3)
    images = torch.rand(N, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 3, 0])
    saliency = InputXGradient(model)  # depends on the input: a non-zero sensitivity

    def explain(x: torch.Tensor, t: torch.Tensor, _indices=None) -> torch.Tensor:
        return saliency.attribute(x.detach().clone().requires_grad_(True), target=t).detach()

    return model, images, target, explain


def noise_of(salt: int, kind: str) -> torch.Tensor:
    """``(N, N_PERTURB, 3, 12, 12)``: every sample's perturbations, as the module draws them
    (uniform in ``[-1, 1]`` or standard normal, seeded by the sample's index and the perturbation's)."""
    draws = torch.stack([per_sample_draws(range(N), (3, 12, 12), SEED, salt, kind, j) for j in range(N_PERTURB)], dim=1)
    return draws * 2 - 1 if kind == "uniform" else draws


def replay(noise: torch.Tensor, infidelity: bool):
    """A captum perturb_func that serves ``noise`` ``(N, n, ...)`` in captum's repeat_interleave layout."""
    served = 0

    def perturb(inputs, *_):
        nonlocal served
        m = inputs.shape[0] // noise.shape[0]
        part = noise[:, served : served + m].reshape(inputs.shape)
        served += m
        return (part, inputs - part) if infidelity else inputs + part

    return perturb


def test_max_sensitivity_is_captums_and_the_mean_uses_the_same_perturbations() -> None:
    _, images, target, explain = workload()
    clean = explain(images, target)
    high, mean = robustness.sensitivity(
        explain, images, target, clean, perturb_radius=0.05, n_perturb_samples=N_PERTURB, batch_size=2, seed=SEED
    )
    noise = 0.05 * noise_of(_SALT_SENSITIVITY, "uniform")
    theirs = sensitivity_max(
        lambda x, target: (explain(x[0] if isinstance(x, tuple) else x, target),),
        images,
        perturb_func=replay(noise, infidelity=False),
        perturb_radius=0.05,
        n_perturb_samples=N_PERTURB,
        target=target,
    )
    np.testing.assert_allclose(high.numpy(), theirs.double().numpy(), rtol=1e-5)
    by_hand = torch.stack(
        [
            (explain(images + noise[:, j], target) - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
            for j in range(N_PERTURB)
        ],
        dim=1,
    )
    np.testing.assert_allclose(mean.numpy(), by_hand.mean(dim=1).double().numpy(), rtol=1e-5)
    assert bool((mean <= high + 1e-12).all()) and bool((mean > 0).all())


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_is_captums(normalize: bool) -> None:
    model, images, target, explain = workload()
    attributions = explain(images, target)
    ours = robustness.infidelity(
        model,
        images,
        attributions,
        target,
        noise_std=0.05,
        n_perturb_samples=N_PERTURB,
        normalize=normalize,
        batch_size=2,
        seed=SEED,
    )
    noise = 0.05 * noise_of(_SALT_INFIDELITY, "normal")
    theirs = captum_infidelity(
        model,
        replay(noise, infidelity=True),
        images,
        attributions,
        target=target,
        n_perturb_samples=N_PERTURB,
        normalize=normalize,
    )
    np.testing.assert_allclose(ours.numpy(), theirs.double().numpy(), rtol=1e-4, atol=1e-9)


def test_normalized_infidelity_ignores_the_attributions_scale() -> None:
    model, images, target, explain = workload()
    attributions = explain(images, target)

    def score(scale: float, normalize: bool) -> np.ndarray:
        return robustness.infidelity(
            model,
            images,
            scale * attributions,
            target,
            noise_std=0.05,
            n_perturb_samples=N_PERTURB,
            normalize=normalize,
            seed=SEED,
        ).numpy()

    np.testing.assert_allclose(score(10.0, True), score(1.0, True), rtol=1e-4, atol=1e-9)
    assert not np.allclose(score(10.0, False), score(1.0, False), rtol=1e-2)


def test_per_sample_scores_do_not_depend_on_the_batch_size() -> None:
    model, images, target, explain = workload()
    clean = explain(images, target)
    runs = [
        (
            *robustness.sensitivity(explain, images, target, clean, n_perturb_samples=3, batch_size=size, seed=SEED),
            robustness.infidelity(model, images, clean, target, n_perturb_samples=3, batch_size=size, seed=SEED),
        )
        for size in (1, 2, N)
    ]
    for run in runs[1:]:
        for ours, reference in zip(run, runs[0], strict=True):
            np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-9)


def test_a_samples_scores_follow_its_index_not_its_position() -> None:
    # A shard holds samples 3 and 4 of the data set: with their indices they get the scores they
    # have in the whole batch; at positions 0 and 1 they would get samples 0's and 1's noise.
    model, images, target, explain = workload()
    clean = explain(images, target)
    part = slice(3, 5)

    def scores(indices):
        return (
            *robustness.sensitivity(
                explain, images[part], target[part], clean[part], n_perturb_samples=3, seed=SEED, indices=indices
            ),
            robustness.infidelity(
                model, images[part], clean[part], target[part], n_perturb_samples=3, seed=SEED, indices=indices
            ),
        )

    whole = (
        *robustness.sensitivity(explain, images, target, clean, n_perturb_samples=3, seed=SEED),
        robustness.infidelity(model, images, clean, target, n_perturb_samples=3, seed=SEED),
    )
    for ours, reference in zip(scores(torch.tensor([3, 4])), whole, strict=True):
        np.testing.assert_allclose(ours.numpy(), reference[part].numpy(), rtol=1e-5, atol=1e-9)
    by_position = scores(None)
    assert by_position[0][0].item() != pytest.approx(whole[0][3].item())
    assert by_position[2][0].item() != pytest.approx(whole[2][3].item())
    with pytest.raises(ValueError, match="indices"):
        robustness.infidelity(model, images, clean, target, indices=[0, 1])


def test_explain_gets_the_indices_of_its_batch() -> None:
    _, images, target, explain = workload()
    clean = explain(images, target)
    seen: list[list[int]] = []

    def recording(x: torch.Tensor, t: torch.Tensor, indices) -> torch.Tensor:
        seen.append(list(indices))
        return explain(x, t)

    robustness.sensitivity(
        recording, images, target, clean, n_perturb_samples=2, batch_size=2, seed=SEED, indices=[10, 11, 12, 13, 14]
    )
    assert seen == [[10, 11], [10, 11], [12, 13], [12, 13], [14], [14]]


def test_saliency_of_a_piecewise_linear_model_barely_moves_under_tiny_noise() -> None:
    model, images, target, _ = workload()
    gradient = Saliency(model)

    def explain(x: torch.Tensor, t: torch.Tensor, _indices=None) -> torch.Tensor:
        return gradient.attribute(x.detach().clone().requires_grad_(True), target=t, abs=False).detach()

    clean = explain(images, target)
    high, _ = robustness.sensitivity(explain, images, target, clean, perturb_radius=1e-6, n_perturb_samples=3)
    assert float(high.max()) < 1e-3  # ReLU regions do not change for so small a move
