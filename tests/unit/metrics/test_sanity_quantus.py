"""Our parameter randomisation, eMPRT and similarities against Quantus 0.6.0 on identical inputs.

How Quantus 0.6.0's randomisation maps onto :mod:`pytest_saliency.metrics.sanity`:

- Layers. Quantus' ``PyTorchModel.get_random_layer_generator`` randomises every module that has
  a ``reset_parameters`` attribute, in ``named_modules`` order reversed for ``top_down``. Ours
  (:func:`parameterised_layers`) takes the modules with parameters of their own, top-down. On a
  network of Conv2d / Linear / BatchNorm2d layers both are the same list (checked below); they
  differ for a ``BatchNorm(affine=False)`` (no parameters: we leave its statistics trained) and
  for a parameterised module without ``reset_parameters`` (Quantus skips it silently, we refuse).
  Quantus' ``independent`` walks the layers bottom-up (definition order); each step randomises
  one layer alone, so only the listing differs: the tests pass our independent run the same
  bottom-up list.
- Weights. Quantus calls ``torch.manual_seed(seed + 1)`` and then ``reset_parameters()`` for each
  layer, on the global generator; we do the same inside ``torch.random.fork_rng`` (the caller's
  random state survives). With the same seed the randomised weights are identical at every step,
  cascading and independent (checked tensor by tensor below), so the similarities can be
  compared on identical explanations.
- Similarity. Quantus' MPRT default is ``correlation_spearman`` on the maps after ``abs`` and
  ``normalise_by_max``; Spearman ignores a positive rescaling, so that is our ``spearman_abs`` on
  the ``abs_sum`` map. Quantus computes ``spearmanr`` of the whole batch (a 2B x 2B matrix) and
  keeps its diagonal block: the same numbers, row by row.
- SSIM. Quantus' ``ssim`` is scikit-image's ``structural_similarity`` with ``data_range`` the
  spread of the pair. Inside MPRT and RandomLogit Quantus flattens each map to one row before the
  similarity, so its SSIM there slides a 7-sample window along the flattened image (a 1-D SSIM);
  ours is the 2-D SSIM of the maps, as in Adebayo et al. They are compared on 2-D maps.
- eMPRT. Quantus' ``EfficientMPRT`` with ``complexity_func_kwargs={"n_bins": 100}`` takes
  ``discrete_entropy``: ``scipy.stats.entropy`` of ``numpy.histogram(map, 100)``, the entropy
  we compute; without ``n_bins`` it picks a bin count by a rule from the data instead.
- Random logit. Quantus draws the other class with ``np.random.seed(seed)`` again for every batch
  (so each batch repeats the same draws), we draw once for all samples from a torch generator: the
  classes differ, so only the similarity function is compared.
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.shapes.model import load
from pytest_saliency.attribution import Attributor
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.metrics.saliency import reduce_channels
from pytest_saliency.metrics.sanity import (
    efficient_mprt_score,
    parameterised_layers,
    randomised_models,
    spearman,
    spearman_abs,
    ssim,
)
from pytest_saliency.spec.schema import AttributionSpec

quantus = pytest.importorskip("quantus", reason="the Quantus comparison needs `pip install -e .[bench]`")
correlation_spearman = quantus.functions.similarity_func.correlation_spearman
quantus_ssim = quantus.functions.similarity_func.ssim

SHAPES = Path(__file__).resolve().parents[3] / "examples" / "shapes"
SEED = 42  # Quantus' default


@pytest.fixture(scope="module")
def shapes() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    data = np.load(SHAPES / "val.npz")
    images = torch.tensor(data["images"][:24].astype(np.float32))
    labels = torch.tensor(data["labels"][:24])
    return load(SHAPES / "clean.pt"), images, labels


def saliency(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
    """Quantus' explain_func: captum Saliency (abs), summed over channels, ``(N, 1, H, W)``."""
    from captum.attr import Saliency

    inputs = torch.as_tensor(inputs).clone().requires_grad_(True)
    maps = Saliency(model).attribute(inputs, target=torch.as_tensor(targets), abs=True)
    return maps.sum(dim=1, keepdim=True).detach().numpy()


def our_maps(model: ModelUnderTest, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What the sanity check computes: the spec's attribution (Saliency, abs) and abs_sum maps."""
    attributor = Attributor(
        AttributionSpec(method="Saliency", params={"abs": True}), model, 64, ("attributions", "grad")
    )
    return reduce_channels(attributor(images, labels, range(len(images)), SEED), "abs_sum")


def quantus_steps(network: torch.nn.Module, order: str):  # type: ignore[no-untyped-def]
    wrapped = quantus.helpers.utils.get_wrapped_model(network, channel_first=True, softmax=False, device="cpu")
    return wrapped.get_random_layer_generator(order=order, seed=SEED)


def quantus_order(network: torch.nn.Module, ours: str) -> list[str]:
    """Our default layers (top-down), bottom-up for ``independent`` as Quantus lists them."""
    layers = parameterised_layers(network)
    return layers if ours == "cascading" else layers[::-1]


def test_the_same_layers_in_the_same_order(shapes) -> None:  # type: ignore[no-untyped-def]
    network, _, _ = shapes
    names = [name for name, _ in quantus_steps(network, "top_down")]
    assert names == parameterised_layers(network) == ["10", "6", "3", "0"]


@pytest.mark.parametrize(("ours", "theirs"), [("cascading", "top_down"), ("independent", "independent")])
def test_identical_randomised_weights_at_every_step(shapes, ours: str, theirs: str) -> None:  # type: ignore[no-untyped-def]
    network, _, _ = shapes
    model = ModelUnderTest(network, None)
    layers = quantus_order(network, ours)
    mine = randomised_models(model, [f"network.{layer}" for layer in layers], ours, SEED)  # type: ignore[arg-type]
    for (layer, quantus_model), (name, copy) in zip(quantus_steps(network, theirs), mine, strict=True):
        assert name == f"network.{layer}"
        theirs_state = quantus_model.state_dict()
        for key, value in copy.network.state_dict().items():
            assert torch.equal(value, theirs_state[key]), (layer, key)


@pytest.mark.parametrize(("ours", "theirs"), [("cascading", "top_down"), ("independent", "independent")])
def test_mprt_similarities_equal_quantus(shapes, ours: str, theirs: str) -> None:  # type: ignore[no-untyped-def]
    network, images, labels = shapes
    metric = quantus.MPRT(layer_order=theirs, seed=SEED, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=network,
            x_batch=images.numpy(),
            y_batch=labels.numpy(),
            a_batch=None,
            explain_func=saliency,
            device="cpu",
            batch_size=10,
        )
    model = ModelUnderTest(network, None)
    trained = our_maps(model, images, labels)
    layers = quantus_order(network, ours)
    steps = randomised_models(model, [f"network.{layer}" for layer in layers], ours, SEED)  # type: ignore[arg-type]
    assert list(scores) == ["original", *layers]
    np.testing.assert_allclose(scores["original"], spearman_abs(trained, trained).numpy(), atol=1e-5)
    for layer, (_, copy) in zip(layers, steps, strict=True):
        mine = spearman_abs(trained, our_maps(copy, images, labels)).numpy()  # type: ignore[arg-type]
        np.testing.assert_allclose(scores[layer], mine, rtol=0, atol=1e-5, err_msg=layer)
    assert np.mean(scores["0"]) < np.mean(scores["10"])  # the cascade loses similarity


def test_efficient_mprt_equals_quantus_with_100_bins(shapes) -> None:  # type: ignore[no-untyped-def]
    network, images, labels = shapes
    metric = quantus.EfficientMPRT(
        complexity_func_kwargs={"n_bins": 100},
        layer_order="top_down",
        seed=SEED,
        abs=True,
        normalise=False,
        disable_warnings=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(
            model=network,
            x_batch=images.numpy(),
            y_batch=labels.numpy(),
            a_batch=None,
            explain_func=saliency,
            device="cpu",
            batch_size=10,
        )
    model = ModelUnderTest(network, None)
    layers = [f"network.{layer}" for layer in parameterised_layers(network)]
    _, copy = deque(randomised_models(model, layers, "cascading", SEED), maxlen=1)[
        0
    ]  # the fully randomised model is the last step
    mine = efficient_mprt_score(our_maps(model, images, labels), our_maps(copy, images, labels))  # type: ignore[arg-type]
    np.testing.assert_allclose(scores, mine.numpy(), rtol=0, atol=1e-5)


def test_spearman_equals_quantus_on_identical_pairs() -> None:
    generator = torch.Generator().manual_seed(0)
    a = (torch.rand(5, 1, 12, 12, generator=generator) * 6).round() - 3  # signed, with ties
    b = torch.rand(5, 1, 12, 12, generator=generator) - 0.5
    theirs = correlation_spearman(a.reshape(5, -1).numpy(), b.reshape(5, -1).numpy(), batched=True)
    np.testing.assert_allclose(spearman(a, b).numpy(), theirs, rtol=0, atol=1e-10)
    theirs_abs = correlation_spearman(a.abs().reshape(5, -1).numpy(), b.abs().reshape(5, -1).numpy(), batched=True)
    np.testing.assert_allclose(spearman_abs(a, b).numpy(), theirs_abs, rtol=0, atol=1e-10)


def test_ssim_equals_quantus_on_two_dimensional_maps() -> None:
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(4, 16, 16, generator=generator, dtype=torch.float64)
    b = 0.5 * a + 0.5 * torch.rand(4, 16, 16, generator=generator, dtype=torch.float64)
    theirs = quantus_ssim(a.numpy(), b.numpy(), batched=True)
    np.testing.assert_allclose(ssim(a, b).numpy(), theirs, rtol=0, atol=1e-10)
