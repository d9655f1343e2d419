"""How the model passes run: the memory layout (``model.memory_format``), mixed precision
(``model.precision``) and compilation (``model.compile``) of the model under test.

``channels_last`` changes only where each number is stored, so a convolutional network computes
the same logits and gradients up to float rounding; it is the default for networks with 2-d
convolutions (``memory_format: auto``). ``bf16``/``fp16`` autocast and ``torch.compile`` change the
arithmetic and are never the default; docs/scale.md gives their measured speed and how far they
move the shipped specs' numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from .errors import SpecRuntimeError

if TYPE_CHECKING:
    from .loaders.models import ModelUnderTest
    from .spec.schema import ModelSpec

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""``model.precision`` -> the autocast dtype (``fp32``: no autocast)."""

_COMPILED: WeakKeyDictionary[nn.Module, Callable[[Tensor], Tensor]] = WeakKeyDictionary()


def is_convolutional(network: nn.Module) -> bool:
    """True when ``network`` has a 2-d convolution (channels_last pays for those)."""
    return any(isinstance(module, nn.Conv2d) for module in network.modules())


def prepare(model: ModelUnderTest, spec: ModelSpec, device: torch.device) -> ModelUnderTest:
    """``model`` set up as ``spec`` asks on ``device``: its layout, precision and compilation.
    ``fp16`` on a device other than CUDA is a :class:`SpecRuntimeError` at ``model.precision``."""
    layout = spec.memory_format
    if layout == "channels_last" or (layout == "auto" and is_convolutional(model.network)):
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if spec.precision == "fp16" and device.type != "cuda":
        raise SpecRuntimeError(
            ("model", "precision"), f"fp16 autocast needs a CUDA device, not {device.type}: use bf16 or fp32"
        )
    model.precision = DTYPES.get(spec.precision)
    model.compiled = spec.compile
    return model


class _ContiguousGradient(torch.autograd.Function):
    """The identity, whose gradient comes back in the default (contiguous) memory layout."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, inputs: Tensor) -> Tensor:
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, gradient: Tensor) -> Tensor:
        return gradient.contiguous()


def contiguous_gradients(inputs: Tensor) -> Tensor:
    """``inputs`` unchanged; their gradient (an attribution) is contiguous even when the network
    computes in channels_last, so that code reading attributions sees the default layout."""
    if not inputs.requires_grad:
        return inputs
    result: Tensor = _ContiguousGradient.apply(inputs)
    return result


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision to ``dtype`` on ``device`` (nothing when None)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def compiled(model: ModelUnderTest) -> Callable[[Tensor], Tensor]:
    """``torch.compile`` of ``model.logits``, once per model object (a copy of the model, such as
    a randomised one, compiles its own)."""
    if model not in _COMPILED:
        _COMPILED[model] = torch.compile(model.logits)
    return _COMPILED[model]
