"""Captum methods by name (Attributor) and baselines."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from pytest_saliency.attribution import Attributor, make_baseline
from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.metrics.image import gaussian_blur
from pytest_saliency.spec.schema import AttributionSpec, NoiseTunnelSpec

BATCH = 4


@pytest.fixture(scope="module")
def model() -> ModelUnderTest:
    torch.manual_seed(0)
    network = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, stride=2, padding=1),  # 8x8 -> 4x4
            act=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(2),
            flat=nn.Flatten(),
            head=nn.Linear(16, 3),
        )
    )
    return ModelUnderTest(network, None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(1))


TARGET = torch.tensor([0, 1, 2, 1])
INDICES = [10, 11, 12, 13]  # the samples' indices in their data set: they seed the random draws
SEED = 0
WHERE = ("attributions", "m")


def attributor(model: ModelUnderTest, **spec: object) -> Attributor:
    return Attributor(AttributionSpec(**spec), model, BATCH, WHERE)  # type: ignore[arg-type]


def input_gradients(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inputs = images.clone().requires_grad_(True)
    scores = model(inputs).gather(1, target.view(-1, 1)).sum()
    (gradient,) = torch.autograd.grad(scores, inputs)
    return gradient


def test_saliency_is_the_absolute_input_gradient(model: ModelUnderTest, images: torch.Tensor) -> None:
    result = attributor(model, method="Saliency")(images, TARGET, INDICES, SEED)
    assert result.shape == images.shape and result.dtype == torch.float32
    assert not result.requires_grad
    torch.testing.assert_close(result, input_gradients(model, images, TARGET).abs())
    signed = attributor(model, method="Saliency", params={"abs": False})(images, TARGET, INDICES, SEED)
    torch.testing.assert_close(signed, input_gradients(model, images, TARGET))


def test_integrated_gradients_defaults_internal_batch_size(model: ModelUnderTest) -> None:
    assert attributor(model, method="IntegratedGradients").params["internal_batch_size"] == BATCH
    chosen = attributor(model, method="IntegratedGradients", internal_batch_size=2)
    assert chosen.params["internal_batch_size"] == 2
    given = attributor(model, method="IntegratedGradients", params={"internal_batch_size": 3})
    assert given.params["internal_batch_size"] == 3
    # methods without the parameter do not get it
    assert "internal_batch_size" not in attributor(model, method="Saliency").params


def test_integrated_gradients_is_complete(model: ModelUnderTest, images: torch.Tensor) -> None:
    method = attributor(model, method="IntegratedGradients", params={"n_steps": 32}, baseline="zeros")
    assert method.takes_baselines
    result = method(images, TARGET, INDICES, SEED)
    assert result.shape == images.shape
    with torch.no_grad():
        gain = model(images).gather(1, TARGET.view(-1, 1)) - model(torch.zeros_like(images)).gather(
            1, TARGET.view(-1, 1)
        )
    torch.testing.assert_close(result.flatten(1).sum(1), gain.flatten(), atol=2e-3, rtol=2e-2)


def test_integrated_gradients_is_batch_size_invariant(model: ModelUnderTest, images: torch.Tensor) -> None:
    method = attributor(model, method="IntegratedGradients", params={"n_steps": 8}, internal_batch_size=5)
    whole = method(images, TARGET, INDICES, SEED)
    parts = torch.cat(
        [method(images[:1], TARGET[:1], INDICES[:1], SEED), method(images[1:], TARGET[1:], INDICES[1:], SEED)]
    )
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=1e-5)


def test_integrated_gradients_with_a_blur_baseline(model: ModelUnderTest, images: torch.Tensor) -> None:
    result = attributor(model, method="IntegratedGradients", params={"n_steps": 32}, baseline="blur")(
        images, TARGET, INDICES, SEED
    )
    with torch.no_grad():
        gain = model(images).gather(1, TARGET.view(-1, 1)) - model(gaussian_blur(images)).gather(1, TARGET.view(-1, 1))
    torch.testing.assert_close(result.flatten(1).sum(1), gain.flatten(), atol=2e-3, rtol=2e-2)


def test_layer_gradcam_is_upsampled_to_the_input(model: ModelUnderTest, images: torch.Tensor) -> None:
    result = attributor(model, method="LayerGradCam", layer="conv")(images, TARGET, INDICES, SEED)
    assert result.shape == (BATCH, 1, 8, 8)
    assert torch.isfinite(result).all()
    # bilinear upsampling of a 4x4 map: 2x2 blocks are no longer constant, the map is not zero
    assert result.abs().sum() > 0


def test_unknown_layer_suggests_a_name(model: ModelUnderTest) -> None:
    with pytest.raises(SpecRuntimeError) as raised:
        attributor(model, method="LayerGradCam", layer="con")
    assert raised.value.location == WHERE + ("layer",)
    assert raised.value.message == "the model has no layer 'con' (did you mean 'conv'?)"


def test_noise_tunnel(model: ModelUnderTest, images: torch.Tensor) -> None:
    import captum.attr

    tunnel = NoiseTunnelSpec(nt_samples=3, stdevs=1e-4)
    method = attributor(model, method="Saliency", noise_tunnel=tunnel)
    assert isinstance(method.method, captum.attr.NoiseTunnel)
    result = method(images, TARGET, INDICES, SEED)
    # with a tiny noise, SmoothGrad of a piecewise linear net is its gradient
    torch.testing.assert_close(result, input_gradients(model, images, TARGET).abs(), atol=1e-4, rtol=1e-3)


def test_noise_tunnel_around_integrated_gradients(model: ModelUnderTest, images: torch.Tensor) -> None:
    tunnel = NoiseTunnelSpec(nt_samples=2, stdevs=0.05)
    method = attributor(model, method="IntegratedGradients", params={"n_steps": 4}, noise_tunnel=tunnel)
    result = method(images, TARGET, INDICES, SEED)
    assert result.shape == images.shape and torch.isfinite(result).all()
    # each sample's noise is drawn from its own seed: alone or in a batch, the same map
    torch.testing.assert_close(method(images[1:2], TARGET[1:2], INDICES[1:2], SEED)[0], result[1])
    state = torch.get_rng_state()
    method(images, TARGET, INDICES, SEED)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was


def test_unknown_param_suggests_the_right_one(model: ModelUnderTest) -> None:
    with pytest.raises(SpecRuntimeError) as raised:
        attributor(model, method="IntegratedGradients", params={"n_step": 8})
    assert raised.value.location == WHERE + ("params", "n_step")
    assert raised.value.message == "IntegratedGradients.attribute() has no parameter 'n_step' (did you mean 'n_steps'?)"


def test_unknown_constructor_argument(model: ModelUnderTest) -> None:
    with pytest.raises(SpecRuntimeError) as raised:
        attributor(model, method="IntegratedGradients", init={"multiply_by_input": False})
    assert raised.value.location == WHERE + ("init", "multiply_by_input")
    assert "(did you mean 'multiply_by_inputs'?)" in raised.value.message


def test_baseline_on_a_method_that_takes_none(model: ModelUnderTest) -> None:
    with pytest.raises(SpecRuntimeError) as raised:
        attributor(model, method="Saliency", baseline="zeros")
    assert raised.value.location == WHERE + ("baseline",)
    assert raised.value.message == "Saliency takes no baseline; remove baseline"


def test_unknown_method(model: ModelUnderTest) -> None:
    with pytest.raises(SpecRuntimeError, match="captum.attr has no method 'NoSuchMethod'") as raised:
        attributor(model, method="NoSuchMethod")
    assert raised.value.location == WHERE + ("method",)


def test_yaml_lists_become_tuples_for_captum(model: ModelUnderTest, images: torch.Tensor) -> None:
    method = attributor(model, method="Occlusion", params={"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]})
    result = method(images, TARGET, INDICES, SEED)
    assert result.shape == images.shape
    # 4x4 windows: the attribution is constant on each window
    block = result[0, 0, :4, :4]
    assert torch.allclose(block, block[0, 0].expand_as(block))


def test_a_failing_captum_call_is_one_spec_line(model: ModelUnderTest, images: torch.Tensor) -> None:
    method = attributor(model, method="Occlusion", params={"sliding_window_shapes": [4, 4]})  # 2-D for 3-D input
    with pytest.raises(SpecRuntimeError) as raised:
        method(images, TARGET, INDICES, SEED)
    assert raised.value.location == WHERE
    assert raised.value.message.startswith("Occlusion failed: ")
    assert "\n" not in raised.value.message


# --- baselines -------------------------------------------------------------------------------


def test_make_baseline_kinds(images: torch.Tensor) -> None:
    assert torch.equal(make_baseline("zeros", images), torch.zeros_like(images))
    assert torch.equal(make_baseline(0.5, images), torch.full_like(images, 0.5))
    mean = make_baseline("mean", images)
    assert mean.shape == images.shape
    torch.testing.assert_close(mean[:, :, 0, 0], images.mean(dim=(2, 3)))
    assert torch.equal(mean, mean[:, :, :1, :1].expand_as(mean))  # constant per image and channel
    blur = make_baseline("blur", images)
    assert blur.shape == images.shape and blur.std() < images.std()
    first = make_baseline("uniform", images, INDICES, seed=3)
    again = make_baseline("uniform", images, INDICES, seed=3)
    other = make_baseline("uniform", images, INDICES, seed=4)
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)
    alone = make_baseline("uniform", images[2:3], INDICES[2:3], seed=3)  # a sample's draw is its own
    assert torch.equal(alone[0], first[2])
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):
        make_baseline("noise", images)
