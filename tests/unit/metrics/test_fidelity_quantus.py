"""Our MIF/LIF curves and ROAD imputation against Quantus 0.6.0 on the same inputs.

How Quantus 0.6.0's ``PixelFlipping`` conventions map onto :func:`fidelity_curves`:

- Features. Quantus broadcasts an ``(N, 1, H, W)`` attribution to ``(N, C, H, W)`` and flips
  *channel values*: ``C * H * W`` features, sorted descending (``np.argsort(-a)``), and
  ``features_in_step`` (which must divide ``H * W``) of them per step. We flip *pixels* (all
  channels at once). With no ties between pixels the ``C`` copies of a pixel are adjacent in
  Quantus' order, so Quantus' point ``t`` (1-based) has flipped whole pixels exactly when
  ``C`` divides ``t * features_in_step``; that point is our fraction
  ``t * features_in_step / (C * H * W)``. On 1-channel inputs every Quantus point is a pixel
  point; on RGB every third one.
- Step counting. Quantus records the score after each step, ``ceil(C*H*W / features_in_step)``
  points, the last with everything flipped, and no point for the clean image. Our fractions
  include 0 (the clean image, computed once) and may include 1.0. So Quantus ``curve[t - 1]``
  is our ``scores[:, j]`` at ``fractions[j] = t * features_in_step / (C * H * W)``.
- Normalisation. Quantus curves are raw scores; ours (``FidelityResult.curves``) are divided by
  the clean score, so compare Quantus with ``FidelityResult.scores`` (raw). Quantus'
  ``normalise=True`` (its default) rescales the *attributions* by their max, which does not change
  their order; it is switched off here anyway, and ``abs=False``.
- Softmax. ``softmax=True`` (Quantus' default) is ``score="probability"``; ``softmax=False`` is
  ``score="logit"``.
- Fill. Quantus' ``perturb_baseline="black"`` is the per-sample *minimum of the current array*,
  not 0; ``fill="zeros"`` is ``perturb_baseline=0.0``.
- ``return_auc_per_sample=True``: ``np.trapz(curve, dx=1)`` over Quantus' points, i.e. in steps
  and without the clean point: ``curve_auc(scores[:, 1:], range(T))``. Our ``auc`` is over the
  fraction axis, on the normalised curve, with the clean point.
- LIF. Quantus only sorts descending and rejects all-negative attributions, so LIF is Quantus on
  ``max(a) - a``.
- Ties. Quantus' ``argsort`` leaves the order of equal values to numpy's quicksort; ours breaks
  ties with a seeded key, so curves agree only for attributions without ties between pixels.

ROAD: Quantus' ``noisy_linear_imputation`` is the authors' scipy system; ours solves the same
system with batched conjugate gradients. Quantus 0.6.0 indexes a 3-channel image with indices
of the flattened ``C * H * W`` attribution and raises IndexError, so ROAD is compared on
1-channel inputs. Its accuracy curve uses ``int(H * W * p / 100)`` pixels: our ``removal_counts``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus", reason="the Quantus comparison needs `pip install -e .[bench]`")

from test_fidelity import small_cnn  # noqa: E402  (the same test model)

from pytest_saliency.metrics.fidelity import curve_auc, fidelity_curves  # noqa: E402
from pytest_saliency.metrics.imputation import linear_impute  # noqa: E402

SIZE = 16
FEATURES_IN_STEP = 32  # divides 16 * 16; 8 whole-pixel points per curve


def workload(channels: int, n: int = 6) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = small_cnn(channels)
    generator = torch.Generator().manual_seed(channels)
    images = torch.rand(n, channels, SIZE, SIZE, generator=generator)
    importance = torch.rand(n, SIZE, SIZE, generator=generator)  # no ties
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    return model, images, target, importance


def quantus_pixel_flipping(model, images, target, attribution, *, softmax: bool, auc: bool = False) -> np.ndarray:
    metric = quantus.PixelFlipping(
        features_in_step=FEATURES_IN_STEP,
        abs=False,
        normalise=False,
        perturb_baseline=0.0,
        return_auc_per_sample=auc,
        disable_warnings=True,
        display_progressbar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=target.numpy(),
            a_batch=attribution,
            softmax=softmax,
            device="cpu",
            batch_size=4,
        )
    return np.asarray(scores)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("softmax", "score"), [(True, "probability"), (False, "logit")])
def test_mif_and_lif_equal_quantus_pixel_flipping(channels: int, softmax: bool, score: str) -> None:
    model, images, target, importance = workload(channels)
    points = SIZE * SIZE // FEATURES_IN_STEP  # our whole-pixel points, fractions j / 8
    fractions = [j / points for j in range(points + 1)]
    ours = fidelity_curves(
        model,
        images,
        importance,
        target=target,
        fractions=fractions,
        orders=("mif", "lif"),
        fill="zeros",
        score=score,
        batch_size=5,
    )
    a = importance.numpy()[:, None].astype(np.float64)
    for order, attribution in (("mif", a), ("lif", a.max() - a)):
        theirs = quantus_pixel_flipping(model, images, target, attribution, softmax=softmax)
        assert theirs.shape == (6, channels * points)
        whole_pixels = theirs[:, channels - 1 :: channels]  # Quantus points t = C * j
        np.testing.assert_allclose(ours.scores[order][:, 1:].numpy(), whole_pixels, rtol=1e-5, atol=1e-6)
    # Our normalised curve is the raw one over the clean score (Quantus has no clean point).
    torch.testing.assert_close(ours.curves["mif"], ours.scores["mif"] / ours.clean[:, None])


def test_auc_per_sample_convention() -> None:
    model, images, target, importance = workload(1)
    points = SIZE * SIZE // FEATURES_IN_STEP
    ours = fidelity_curves(
        model,
        images,
        importance,
        target=target,
        fractions=[j / points for j in range(points + 1)],
        orders=("mif",),
        score="probability",
    )
    theirs = quantus_pixel_flipping(model, images, target, importance.numpy()[:, None], softmax=True, auc=True)
    expected = curve_auc(ours.scores["mif"][:, 1:], list(range(points)))  # step units, no clean point
    np.testing.assert_allclose(theirs, expected.numpy(), rtol=1e-5)


def test_noisy_linear_imputation_equals_quantus_without_noise() -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation

    generator = torch.Generator().manual_seed(11)
    images = torch.rand(5, 1, 20, 24, generator=generator)
    importance = torch.rand(5, 20 * 24, generator=generator)
    for fraction in (0.1, 0.5, 0.9):
        k = int(fraction * 20 * 24)
        order = importance.argsort(dim=1, descending=True)[:, :k]
        removed = torch.zeros(5, 20 * 24, dtype=torch.bool).scatter_(1, order, True).view(5, 20, 24)
        ours = linear_impute(images, removed).numpy()
        theirs = np.stack([noisy_linear_imputation(images[i].numpy(), order[i].numpy(), noise=0.0) for i in range(5)])
        np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


def test_road_accuracy_curve_equals_quantus_without_noise() -> None:
    model, images, target, importance = workload(1, n=8)
    percentages = [10, 30, 50, 70]
    metric = quantus.ROAD(
        percentages=percentages,
        noise=0.0,
        abs=False,
        normalise=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One batch: Quantus 0.6.0 keeps only the first batch's scores.
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=target.numpy(),
            a_batch=importance.numpy()[:, None],
            device="cpu",
            batch_size=8,
        )
    ours = fidelity_curves(
        model,
        images,
        importance,
        target=target,
        fractions=[p / 100 for p in percentages],
        orders=("mif",),
        fill="noisy_linear",
        noise_std=0.0,
        score="accuracy",
    )
    assert ours.mean_curve("mif").tolist() == pytest.approx([metric.evaluation_scores[p] for p in percentages])
