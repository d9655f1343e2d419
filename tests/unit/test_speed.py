"""Memory layout, mixed precision and compilation of the model under test (pytest_saliency.speed)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.models import ModelUnderTest
from pytest_saliency.spec.schema import ModelSpec
from pytest_saliency.speed import is_convolutional, prepare

CPU = torch.device("cpu")


def convolutional() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


def model(**settings: object) -> ModelUnderTest:
    spec = ModelSpec.model_validate({"factory": "x:y", **settings})
    return prepare(ModelUnderTest(convolutional(), None).eval(), spec, CPU)


def logits_and_gradients(network: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = images.clone().requires_grad_(True)
    logits = network(inputs)
    (gradient,) = torch.autograd.grad(logits[:, 1].sum(), inputs)
    return logits.detach(), gradient


def test_auto_is_channels_last_for_a_convolutional_network_and_changes_no_number() -> None:
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fast, default = model(), model(memory_format="contiguous")
    assert fast.channels_last and not default.channels_last
    assert fast.network[0].weight.is_contiguous(memory_format=torch.channels_last)
    logits, gradient = logits_and_gradients(fast, images)
    expected_logits, expected_gradient = logits_and_gradients(default, images)
    assert gradient.is_contiguous()  # attributions keep the default layout for the code that reads them
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-5, atol=1e-6)


def test_auto_leaves_a_network_without_convolutions_as_it_is() -> None:
    assert is_convolutional(convolutional()) and not is_convolutional(nn.Linear(2, 2))
    spec = ModelSpec.model_validate({"factory": "x:y"})
    assert not prepare(ModelUnderTest(nn.Linear(2, 2), None), spec, CPU).channels_last


def test_fp16_off_cuda_is_one_line_at_model_precision() -> None:
    with pytest.raises(SpecRuntimeError) as caught:
        model(precision="fp16")
    assert caught.value.location == ("model", "precision")
    assert caught.value.message == "fp16 autocast needs a CUDA device, not cpu: use bf16 or fp32"


def test_bf16_gives_float32_logits_near_the_fp32_ones() -> None:
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    low = model(precision="bf16")
    assert low.precision == torch.bfloat16
    logits, gradient = logits_and_gradients(low, images)
    expected_logits, expected_gradient = logits_and_gradients(model(), images)
    assert logits.dtype == torch.float32 and gradient.dtype == torch.float32
    torch.testing.assert_close(logits, expected_logits, rtol=0.05, atol=0.05)
    assert not torch.equal(logits, expected_logits)  # the arithmetic did change


def test_compile_computes_the_eager_logits_and_a_copy_compiles_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The eager backend traces as inductor does, without its code generation (seconds, not minutes).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    compiled = model(compile=True)
    eager = model()
    torch.testing.assert_close(compiled(images), eager(images), rtol=1e-4, atol=1e-5)
    randomised = copy.deepcopy(compiled)
    with torch.no_grad():
        for parameter in randomised.parameters():
            parameter.normal_()
    assert not torch.allclose(randomised(images), compiled(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_and_channels_last_on_cuda_give_float32_logits_near_the_fp32_ones() -> None:
    cuda = torch.device("cuda")
    images = torch.rand(4, 3, 16, 16, device=cuda)
    spec = ModelSpec.model_validate({"factory": "x:y", "precision": "fp16"})
    half = prepare(ModelUnderTest(convolutional(), None).to(cuda).eval(), spec, cuda)
    full = prepare(
        ModelUnderTest(convolutional(), None).to(cuda).eval(), ModelSpec.model_validate({"factory": "x:y"}), cuda
    )
    logits, gradient = logits_and_gradients(half, images)
    expected_logits, _ = logits_and_gradients(full, images)
    assert logits.dtype == torch.float32 and gradient.is_contiguous()
    torch.testing.assert_close(logits, expected_logits, rtol=0.02, atol=0.02)
